//! `drdctl verify`: is each region ready to take over? Every check runs concurrently with its
//! own timeout, so one slow or dead region never hides what the others report.
//!
//! A check has a dotted name (`kube.api`, `app.deployments`, `db.primary`, ...), an optional
//! region, and ends as pass, warn, fail or skip with one line of detail that names the object.
//! [`render`] turns the results into a table, JSON or JUnit XML. Exit codes: 0 every check
//! passed (warnings allowed), 1 a check failed, 2 verify could not run.

pub mod checks;
pub mod render;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    pub detail: String,
}

impl Outcome {
    pub fn pass(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Pass,
            detail: detail.into(),
        }
    }
    pub fn warn(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Warn,
            detail: detail.into(),
        }
    }
    pub fn fail(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Fail,
            detail: detail.into(),
        }
    }
    pub fn skip(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Skip,
            detail: detail.into(),
        }
    }
}

/// One check's result, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub region: Option<String>,
    pub status: Status,
    pub detail: String,
    pub elapsed_ms: u64,
}

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A check to run.
pub struct Check<'a> {
    pub name: &'static str,
    pub region: Option<String>,
    pub run: CheckFuture<'a>,
}

impl<'a> Check<'a> {
    pub fn new(
        name: &'static str,
        region: Option<&str>,
        run: impl Future<Output = Outcome> + Send + 'a,
    ) -> Self {
        Check {
            name,
            region: region.map(str::to_string),
            run: Box::pin(run),
        }
    }
}

/// Runs every check concurrently, each bounded by `timeout`; results in the checks' order.
pub async fn run_all(checks: Vec<Check<'_>>, timeout: Duration) -> Vec<CheckResult> {
    let runs = checks.into_iter().map(|c| async move {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, c.run).await {
            Ok(o) => o,
            Err(_) => Outcome::fail(format!("no answer within {:.1}s", timeout.as_secs_f64())),
        };
        CheckResult {
            check: c.name.to_string(),
            region: c.region,
            status: outcome.status,
            detail: outcome.detail,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    });
    futures_util::future::join_all(runs).await
}

/// Whether `name` is selected by `--check` filters (a filter matches a name or a prefix
/// ending at a dot: `db` selects `db.primary` and `db.lag`).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| name == f || name.starts_with(&format!("{f}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(selected("db.lag", &[]));
        assert!(selected("db.lag", &["db".into()]));
        assert!(selected("db.lag", &["db.lag".into()]));
        assert!(!selected("dbx.lag", &["db".into()]));
        assert!(!selected("kube.api", &["db".into()]));
    }

    #[tokio::test]
    async fn a_slow_check_fails_alone() {
        let checks = vec![
            Check::new("fast", None, async { Outcome::pass("ok") }),
            Check::new("slow", Some("dr"), async {
                std::future::pending::<()>().await;
                Outcome::pass("never")
            }),
        ];
        let r = run_all(checks, Duration::from_millis(50)).await;
        assert_eq!(r[0].status, Status::Pass);
        assert_eq!(r[1].status, Status::Fail);
        assert!(r[1].detail.contains("no answer within"));
    }
}
