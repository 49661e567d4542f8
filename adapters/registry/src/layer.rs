//! Reproducible image layers: a tar in memory, gzip-compressed, whose bytes depend only on
//! the entries' paths, contents and declared modes.
//!
//! What makes the bytes stable: entries sorted by path (a directory before what it holds),
//! ustar headers written field by field with mtime 0 and the owner given (0 = root, or 65532 =
//! the distroless `nonroot` user), no user/group names, and gzip with header mtime 0, no file
//! name and a fixed level. The source file's mtime, mode and owner never leak in.
//!
//! The layer's `digest` (of the gzip bytes, what the manifest lists) depends on the gzip
//! implementation too (the crate's Rust backend; a unit test pins one digest so a change is
//! noticed); its `diff_id` (of the tar, what the config lists) does not.

use std::io::Write;

use bytes::Bytes;
use flate2::{Compression, GzBuilder};

use crate::digest::sha256_digest;

/// The media type of the layers this crate writes.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The uid/gid of distroless's `nonroot` user, the user the images run as.
pub const NONROOT: u32 = 65532;

/// The mtime of every entry: fixed, so a rebuild of the same binary gives the same layer
/// (whatever the commit), as ko and jib do.
const ENTRY_MTIME: u64 = 0;

/// The gzip level: a fixed level is part of what makes the bytes stable.
const GZIP_LEVEL: u32 = 6;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Bytes),
    Symlink(String),
}

/// One entry of a layer: a path relative to the root (no leading `/`), its kind, mode and owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl LayerEntry {
    /// A root-owned directory, mode 0755.
    pub fn dir(path: &str) -> Self {
        Self::new(path, EntryKind::Dir, 0o755)
    }

    /// A root-owned file.
    pub fn file(path: &str, data: impl Into<Bytes>, mode: u32) -> Self {
        Self::new(path, EntryKind::File(data.into()), mode)
    }

    /// A root-owned symbolic link to `target`.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    fn new(path: &str, kind: EntryKind, mode: u32) -> Self {
        LayerEntry {
            path: path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// The same entry owned by `uid:gid`.
    pub fn owned_by(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A finished layer.
#[derive(Clone)]
pub struct Layer {
    /// The gzip-compressed tar: the blob that is pushed.
    pub blob: Bytes,
    /// `sha256:` of [`Layer::blob`]: what the manifest lists.
    pub digest: String,
    /// `sha256:` of the uncompressed tar: what the image config's `rootfs.diff_ids` lists.
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("digest", &self.digest)
            .field("diff_id", &self.diff_id)
            .field("size", &self.blob.len())
            .finish()
    }
}

/// The tar path of an entry: directories end with `/`.
fn tar_path(e: &LayerEntry) -> String {
    match e.kind {
        EntryKind::Dir => format!("{}/", e.path),
        _ => e.path.clone(),
    }
}

/// Builds a layer from `entries` (any order; duplicates are an error).
pub fn build_layer(mut entries: Vec<LayerEntry>) -> std::io::Result<Layer> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("layer entry `{}` given twice", w[0].path),
        ));
    }
    let mut tar = tar::Builder::new(Vec::new());
    for e in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(tar_path(e))?;
        h.set_mode(e.mode);
        h.set_uid(e.uid.into());
        h.set_gid(e.gid.into());
        h.set_mtime(ENTRY_MTIME);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                tar.append(&h, std::io::empty())?;
            }
            EntryKind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_cksum();
                tar.append(&h, &data[..])?;
            }
            EntryKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(target)?;
                h.set_cksum();
                tar.append(&h, std::io::empty())?;
            }
        }
    }
    let tar = tar.into_inner()?;
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(GZIP_LEVEL));
    gz.write_all(&tar)?;
    let blob = gz.finish()?;
    Ok(Layer {
        digest: sha256_digest(&blob),
        diff_id: sha256_digest(&tar),
        tar_size: tar.len() as u64,
        blob: Bytes::from(blob),
    })
}

/// The layer of a service image: `/usr/local/bin/<name>` (mode 0755, owned by root, so the
/// `nonroot` user can run it but not replace it) and its parent directories.
pub fn binary_layer(binary: Bytes, path_in_image: &str) -> std::io::Result<Layer> {
    let path = path_in_image.trim_start_matches('/');
    let mut entries = Vec::new();
    let mut parent = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for dir in &parts[..parts.len() - 1] {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(dir);
        entries.push(LayerEntry::dir(&parent));
    }
    entries.push(LayerEntry::file(path, binary, 0o755));
    build_layer(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct Unpacked {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        data: Vec<u8>,
    }

    fn unpack(layer: &Layer) -> Vec<Unpacked> {
        let gz = flate2::read::GzDecoder::new(&layer.blob[..]);
        let mut ar = tar::Archive::new(gz);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                Unpacked {
                    path: h.path().unwrap().to_string_lossy().into_owned(),
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mtime: h.mtime().unwrap(),
                    data,
                }
            })
            .collect()
    }

    #[test]
    fn binary_layer_holds_the_binary_and_its_directories_in_order() {
        let l = binary_layer(Bytes::from_static(b"\x7fELF..."), "/usr/local/bin/svc").unwrap();
        let entries = unpack(&l);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/svc"]
        );
        let bin = &entries[3];
        assert_eq!(bin.kind, tar::EntryType::Regular);
        assert_eq!(bin.mode, 0o755);
        assert_eq!((bin.uid, bin.gid, bin.mtime), (0, 0, 0));
        assert_eq!(bin.data, b"\x7fELF...");
        assert!(entries[..3]
            .iter()
            .all(|e| e.kind == tar::EntryType::Directory && e.mode == 0o755));
    }

    #[test]
    fn same_entries_in_any_order_give_the_same_bytes() {
        let a = build_layer(vec![
            LayerEntry::file("etc/passwd", "root:x:0:0::/root:/sbin/nologin\n", 0o644),
            LayerEntry::dir("etc"),
            LayerEntry::dir("home/nonroot").owned_by(NONROOT, NONROOT),
            LayerEntry::dir("home"),
            LayerEntry::symlink("lib64", "lib"),
        ])
        .unwrap();
        let b = build_layer(vec![
            LayerEntry::symlink("lib64", "lib"),
            LayerEntry::dir("home"),
            LayerEntry::dir("/etc/"),
            LayerEntry::dir("home/nonroot").owned_by(NONROOT, NONROOT),
            LayerEntry::file("/etc/passwd", "root:x:0:0::/root:/sbin/nologin\n", 0o644),
        ])
        .unwrap();
        assert_eq!(a.blob, b.blob);
        assert_eq!(a.digest, b.digest);
        let e = unpack(&a);
        let home = e.iter().find(|e| e.path == "home/nonroot/").unwrap();
        assert_eq!((home.uid, home.gid), (65532, 65532));
        // gzip header: magic, deflate, no flags, mtime 0.
        assert_eq!(&a.blob[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn duplicate_paths_are_refused() {
        let e = build_layer(vec![LayerEntry::dir("etc"), LayerEntry::dir("/etc")]).unwrap_err();
        assert!(e.to_string().contains("`etc` given twice"));
    }

    #[test]
    fn digests_are_pinned() {
        // If this changes, images built from the same binary change digest: a tar or gzip
        // change. Update deliberately, and say so in the notes. The gzip bytes depend on
        // flate2's backend, which cargo's feature unification picks per build: zlib-rs when
        // the lab is in the build (its SPDY needs zlib's preset dictionaries: `cargo test
        // --workspace`, drdctl by default), miniz_oxide otherwise (`-p drd-registry` alone,
        // drdctl --no-default-features). Each backend has its pinned digest.
        let l = binary_layer(Bytes::from_static(b"hello\n"), "/usr/local/bin/hello").unwrap();
        assert_eq!(l.diff_id, PINNED_DIFF_ID, "tar bytes changed");
        assert!(
            [PINNED_DIGEST_MINIZ, PINNED_DIGEST_ZLIB_RS].contains(&l.digest.as_str()),
            "gzip bytes changed: {}",
            l.digest
        );
    }

    const PINNED_DIFF_ID: &str =
        "sha256:a052147061186b6463788fa5ebcd5da5bc4e1fb52313b86dc0cf6faa8ce6865f";
    const PINNED_DIGEST_MINIZ: &str =
        "sha256:a4755711fa6ef71631b21f1ab68309c73b8cd7c98e1e52a4cbf04d188a954837";
    const PINNED_DIGEST_ZLIB_RS: &str =
        "sha256:a53b1054e98aa80537800598cb9c6aaaa377db3b1340488ca040fd2cda24079b";
}
