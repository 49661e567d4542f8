//! The journal of a failover or failback run: one JSON file in the state directory, rewritten
//! atomically (temp file + rename) after every step, so a run killed at any point leaves a
//! truthful record and the next run resumes from it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// Could not be done now (the region is unreachable) and must be done when it returns:
    /// not counted as done, so the next run does it.
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
    /// `failover` or `failback`.
    pub kind: String,
    /// The region being made active.
    pub to: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// Whether the run ended with every step done (a finished run is never resumed).
    pub completed: bool,
    pub steps: Vec<StepRecord>,
}

pub struct Journal {
    path: PathBuf,
    pub run: Run,
}

impl Journal {
    /// The journal file of the current (or last) run in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.json")
    }

    /// The run a previous invocation left unfinished, if any.
    pub fn unfinished(state_dir: &Path) -> std::io::Result<Option<Run>> {
        let path = Self::path_in(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let run: Run = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is not a drdctl journal ({e}); move it aside",
                            path.display()
                        ),
                    )
                })?;
                Ok((!run.completed).then_some(run))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts a new run, or continues `resume`.
    pub fn open(
        state_dir: &Path,
        kind: &str,
        to: &str,
        resume: Option<Run>,
    ) -> std::io::Result<Journal> {
        std::fs::create_dir_all(state_dir)?;
        let run = resume.unwrap_or_else(|| Run {
            id: format!("{kind}-{}", Utc::now().format("%Y%m%dT%H%M%SZ")),
            kind: kind.to_string(),
            to: to.to_string(),
            started: Utc::now(),
            finished: None,
            completed: false,
            steps: Vec::new(),
        });
        let j = Journal {
            path: Self::path_in(state_dir),
            run,
        };
        j.save()?;
        Ok(j)
    }

    pub fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&self.run).expect("serialisable"),
        )?;
        std::fs::rename(&tmp, &self.path)
    }

    pub fn begin(&mut self, name: &str) -> std::io::Result<()> {
        self.run.steps.push(StepRecord {
            name: name.to_string(),
            state: StepState::Running,
            started: Utc::now(),
            ended: None,
            detail: String::new(),
        });
        self.save()
    }

    /// Records how step `name` (its latest running record) ended.
    pub fn end(
        &mut self,
        name: &str,
        state: StepState,
        detail: impl Into<String>,
    ) -> std::io::Result<()> {
        if let Some(s) = self
            .run
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.name == name && s.state == StepState::Running)
        {
            s.state = state;
            s.ended = Some(Utc::now());
            s.detail = detail.into();
        }
        self.save()
    }

    /// Whether `name` was completed by this run (or the run it resumes).
    pub fn is_done(&self, name: &str) -> bool {
        self.run.steps.iter().any(|s| {
            s.name == name
                && matches!(
                    s.state,
                    StepState::Done | StepState::AlreadyDone | StepState::Skipped
                )
        })
    }

    pub fn finish(&mut self, completed: bool) -> std::io::Result<()> {
        self.run.finished = Some(Utc::now());
        self.run.completed = completed;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_run_is_found_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::unfinished(dir.path()).unwrap().is_none());
        let mut j = Journal::open(dir.path(), "failover", "dr", None).unwrap();
        j.begin("preflight").unwrap();
        j.end("preflight", StepState::Done, "both regions reachable")
            .unwrap();
        j.begin("fence-primary").unwrap();
        drop(j); // killed here: the step is recorded as running

        let run = Journal::unfinished(dir.path())
            .unwrap()
            .expect("an unfinished run");
        assert_eq!(run.steps.last().unwrap().state, StepState::Running);
        let mut j = Journal::open(dir.path(), "failover", "dr", Some(run)).unwrap();
        assert!(j.is_done("preflight"));
        assert!(!j.is_done("fence-primary"));
        j.finish(true).unwrap();
        assert!(Journal::unfinished(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_journal_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Journal::path_in(dir.path()), "{not json").unwrap();
        let e = Journal::unfinished(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("journal.json") && e.contains("move it aside"),
            "{e}"
        );
    }
}
