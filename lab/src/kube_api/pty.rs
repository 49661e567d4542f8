//! A pseudo-terminal for `kubectl exec -t`, as a container runtime gives a TTY process: the
//! command gets the slave as stdin, stdout and stderr (so stderr joins stdout, as on a real
//! terminal) and, through util-linux `setsid --ctty`, as its controlling terminal in a session
//! of its own; the double reads and writes the master (non-blocking, on the tokio reactor) and
//! applies kubectl's resizes with TIOCSWINSZ.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, ReadBuf};

/// The master side of a terminal.
pub(crate) struct Pty {
    master: AsyncFd<OwnedFd>,
}

impl Pty {
    /// A new terminal: the master, and the slave to give the process.
    pub(crate) fn open() -> io::Result<(Pty, OwnedFd)> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let flags = rustix::fs::fcntl_getfl(&master)?;
        rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
        // `AsyncFd::new` is deprecated for inner types that do not own their descriptor (tokio
        // #8587); an `OwnedFd` does, and its replacement `register` is `unsafe`, which the
        // workspace denies.
        #[allow(deprecated)]
        let master = AsyncFd::new(master)?;
        Ok((Pty { master }, slave))
    }

    /// Types `data` on the terminal.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal's size (the process gets SIGWINCH).
    pub(crate) fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.master.get_ref(), size)?;
        Ok(())
    }
}

/// The terminal's output as a byte stream (what the process writes, echo included); it ends
/// once every slave is closed (the process and whatever it started have exited: the master
/// then reads EIO).
pub(crate) struct PtyReader(pub(crate) Arc<Pty>);

impl AsyncRead for PtyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = match self.0.master.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let read = guard
                .try_io(|fd| rustix::io::read(fd.get_ref(), unfilled).map_err(io::Error::from));
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// kubectl's resize messages on channel 4: `{"Width":W,"Height":H}` (client-go
/// `TerminalSize`, no JSON tags), one or more in a frame.
pub(crate) fn parse_resizes(data: &[u8]) -> Vec<(u16, u16)> {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .filter_map(|v| {
            let w = u16::try_from(v["Width"].as_u64()?).ok()?;
            let h = u16::try_from(v["Height"].as_u64()?).ok()?;
            Some((w, h))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_as_kubectl_sends_them() {
        assert_eq!(
            parse_resizes(b"{\"Width\":100,\"Height\":30}\n{\"Width\":80,\"Height\":24}\n"),
            [(100, 30), (80, 24)]
        );
        assert!(parse_resizes(b"not json").is_empty());
    }

    #[tokio::test]
    async fn a_process_on_the_terminal() {
        let (pty, slave) = Pty::open().unwrap();
        pty.resize(100, 30).unwrap();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "stty size; tty; read x; echo got $x"])
            .stdin(std::process::Stdio::from(slave.try_clone().unwrap()))
            .stdout(std::process::Stdio::from(slave.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(slave));
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        pty.write_all(b"typed\n").await.unwrap();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut PtyReader(Arc::new(pty)), &mut out)
            .await
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        let out = String::from_utf8_lossy(&out);
        // The terminal echoes the input and turns \n into \r\n.
        assert!(out.contains("30 100\r\n"), "{out:?}");
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(out.contains("got typed\r\n"), "{out:?}");
    }
}
