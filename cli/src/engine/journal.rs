//! The journal of a failover or failback run: who runs it, what it was asked, and how each step
//! ended. Saved after every step boundary through a [`JournalStore`] (the real one: one JSON
//! file in the state directory, rewritten atomically by temp file + rename), so a run killed at
//! any point leaves a truthful record. The engine decides from the live state, not from the
//! journal: the journal says that a run is unfinished (so a different command is refused until
//! it is resumed or abandoned), what it did, and who did it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::plan::RunKind;
use super::ports::JournalStore;
use crate::cli::Region;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    /// The step acted and confirmed the result.
    Done,
    /// The live state already was what the step wants: nothing to do.
    AlreadyDone,
    /// Not applicable (e.g. primary-side steps in an emergency failover).
    Skipped,
    /// Could not be done now (the region is unreachable) and must be done when it returns.
    Deferred,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub state: StepState,
    pub started: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub kind: RunKind,
    /// The region being made active.
    pub to: Region,
    /// `user@host pid=N run=ID`: who runs it (the lock's holder).
    #[serde(default)]
    pub holder: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// The run ended with every step done (a finished run is never resumed).
    pub completed: bool,
    /// The operator abandoned it (`drdctl abandon`).
    #[serde(default)]
    pub abandoned: bool,
    pub steps: Vec<StepRecord>,
}

impl Run {
    pub fn new(id: String, kind: RunKind, to: Region, holder: String, now: DateTime<Utc>) -> Run {
        Run {
            id,
            kind,
            to,
            holder,
            started: now,
            finished: None,
            completed: false,
            abandoned: false,
            steps: Vec::new(),
        }
    }
    /// Still to be resumed or abandoned.
    pub fn unfinished(&self) -> bool {
        self.finished.is_none()
    }
    /// Whether any step changed something.
    pub fn changed_anything(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.state,
                StepState::Done | StepState::Running | StepState::Failed
            )
        })
    }
    /// The steps it finished, by name.
    pub fn done(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    StepState::Done | StepState::AlreadyDone | StepState::Skipped
                )
            })
            .map(|s| s.name.as_str())
            .collect()
    }
    /// `id (kind to region, started at by holder)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} to {}, started {} by {})",
            self.id,
            self.kind.name(),
            self.to,
            self.started.format("%Y-%m-%d %H:%M:%SZ"),
            self.holder
        )
    }

    /// The command that resumes it.
    pub fn command(&self) -> String {
        match self.kind {
            RunKind::Failover => format!("drdctl failover --to {}", self.to),
            RunKind::Failback => "drdctl failback".into(),
        }
    }
}

/// The journal of one run, saved through its store at every change.
pub struct Journal {
    store: Arc<dyn JournalStore>,
    pub run: Run,
}

impl Journal {
    pub fn new(store: Arc<dyn JournalStore>, run: Run) -> anyhow::Result<Journal> {
        let j = Journal { store, run };
        j.save()?;
        Ok(j)
    }

    pub fn save(&self) -> anyhow::Result<()> {
        self.store.save(&self.run)
    }

    pub fn begin(&mut self, name: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.run.steps.push(StepRecord {
            name: name.to_string(),
            state: StepState::Running,
            started: now,
            ended: None,
            detail: String::new(),
        });
        self.save()
    }

    /// Records how step `name` (its latest running record, or a new one) ended.
    pub fn end(
        &mut self,
        name: &str,
        state: StepState,
        detail: impl Into<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        match self
            .run
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.name == name && s.state == StepState::Running)
        {
            Some(s) => {
                s.state = state;
                s.ended = Some(now);
                s.detail = detail.into();
            }
            None => self.run.steps.push(StepRecord {
                name: name.to_string(),
                state,
                started: now,
                ended: Some(now),
                detail: detail.into(),
            }),
        }
        self.save()
    }

    pub fn finish(&mut self, completed: bool, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.run.finished = Some(now);
        self.run.completed = completed;
        self.save()
    }
}

/// The real store: `journal.json` in the state directory.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.join("journal.json")
    }
}

impl JournalStore for FileStore {
    fn load(&self) -> anyhow::Result<Option<Run>> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a drdctl journal ({e}); it was written by another version or edited: \
                     rename it to keep it, and drdctl starts a new one",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    fn save(&self, run: &Run) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.path();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(run)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_run_is_found_and_its_steps_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(FileStore::new(dir.path()));
        assert!(store.load().unwrap().is_none());
        let now = Utc::now();
        let run = Run::new("r1".into(), RunKind::Failover, Region::Dr, "me".into(), now);
        let mut j = Journal::new(store.clone(), run).unwrap();
        j.begin("preflight", now).unwrap();
        j.end("preflight", StepState::Done, "both regions reachable", now)
            .unwrap();
        j.begin("fence-source", now).unwrap();
        drop(j); // killed here: the step is recorded as running

        let run = store.load().unwrap().expect("a run");
        assert!(run.unfinished() && run.changed_anything());
        assert_eq!(run.done(), ["preflight"]);
        assert_eq!(run.steps.last().unwrap().state, StepState::Running);
        let mut j = Journal::new(store.clone(), run).unwrap();
        j.finish(true, now).unwrap();
        assert!(!store.load().unwrap().unwrap().unfinished());
    }

    #[test]
    fn a_corrupt_journal_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        std::fs::write(store.path(), "{not json").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("journal.json") && e.contains("rename it"), "{e}");
    }
}
