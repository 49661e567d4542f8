//! The drill's report: what ran and how long it took, what the traffic saw, and the verdict.

use std::fmt::Write as _;

use lab::traffic::{Kind, TrafficLog};
use serde::Serialize;

use super::WritableWatch;

/// One step of a failover or failback, from its journal, on the traffic clock.
#[derive(Debug, Clone, Serialize)]
pub struct StepMark {
    pub name: String,
    pub state: String,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// What a failed step reported (its journal's detail); `None` for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One drdctl command the drill ran.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub command: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub exit_code: Option<i32>,
    pub steps: Vec<StepMark>,
    /// As drdctl measured it (fence to the target taking writes).
    pub write_unavailability_secs: Option<f64>,
    /// WAL bytes the new primary lacks (0 in a planned switchover).
    pub lost_bytes: Option<u64>,
    /// Why the command stopped or refused, as it said in its JSON (`None` when it did not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub sent: usize,
    pub acknowledged: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub lab_up_secs: f64,
    /// From the first request to the last.
    pub drill_secs: f64,
    pub fqdn: String,
    pub phases: Vec<Phase>,
    pub writes: Counts,
    pub reads: Counts,
    /// The longest time with no acknowledged write, as the traffic saw it.
    pub client_write_gap_secs: Option<f64>,
    /// Acknowledged writes not in the active database afterwards (`None`: not checked).
    pub acknowledged_writes_missing: Option<usize>,
    /// A few of them, by username.
    pub missing_examples: Vec<String>,
    pub active_region_after: String,
    /// (ms, addresses) each time the name's answer changed.
    pub dns_answers: Vec<(u64, Vec<String>)>,
    pub split_brain: WritableWatch,
}

pub struct Inputs<'a> {
    pub up_secs: f64,
    pub fqdn: String,
    pub phases: Vec<Phase>,
    pub log: &'a TrafficLog,
    pub missing: Option<Vec<String>>,
    pub active_region: String,
    pub watch: WritableWatch,
}

impl Report {
    pub fn new(i: Inputs<'_>) -> Report {
        let counts = |k| {
            let (sent, ok) = i.log.count(k);
            Counts {
                sent,
                acknowledged: ok,
                failed: sent - ok,
            }
        };
        let end = i.log.requests.iter().map(|r| r.at_ms).max().unwrap_or(0);
        Report {
            lab_up_secs: i.up_secs,
            drill_secs: end as f64 / 1000.0,
            fqdn: i.fqdn,
            phases: i.phases,
            writes: counts(Kind::Write),
            reads: counts(Kind::Read),
            client_write_gap_secs: i
                .log
                .longest_kept_write_gap_ms(i.missing.as_deref().unwrap_or_default())
                .map(|(g, _)| g as f64 / 1000.0),
            acknowledged_writes_missing: i.missing.as_ref().map(Vec::len),
            missing_examples: i.missing.iter().flatten().take(10).cloned().collect(),
            active_region_after: i.active_region,
            dns_answers: i
                .log
                .dns
                .iter()
                .map(|d| (d.at_ms, d.addresses.iter().map(|a| a.to_string()).collect()))
                .collect(),
            split_brain: i.watch,
        }
    }

    /// What makes the drill fail; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.phases.len() < 4 {
            f.push("not every step ran".into());
        }
        for p in &self.phases {
            if p.exit_code != Some(0) {
                f.push(format!("`{}` exited {:?}", p.command, p.exit_code));
            }
        }
        match self.acknowledged_writes_missing {
            Some(0) => {}
            Some(n) => f.push(format!("{n} acknowledged writes are missing")),
            None => f.push("the acknowledged writes could not be checked".into()),
        }
        if !self.split_brain.both_writable_at_ms.is_empty() {
            f.push(format!(
                "both databases took writes at once ({} samples)",
                self.split_brain.both_writable_at_ms.len()
            ));
        }
        if self.active_region_after != "primary" {
            f.push(format!(
                "after failback the active region is {}",
                self.active_region_after
            ));
        }
        f
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = |ms: u64| ms as f64 / 1000.0;
        let _ = writeln!(s, "DRILL REPORT");
        let _ = writeln!(
            s,
            "  lab up in {:.1}s; drill {:.1}s of traffic through {}",
            self.lab_up_secs, self.drill_secs, self.fqdn
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "  {:>6.1}s  {:<9} {:>5.1}s  exit {}  ({})",
                secs(p.start_ms),
                p.name,
                secs(p.end_ms - p.start_ms),
                p.exit_code.map_or("-".into(), |c| c.to_string()),
                p.command
            );
            for st in &p.steps {
                let _ = writeln!(
                    s,
                    "            {:<24} {:<12} {}",
                    st.name,
                    st.state,
                    st.end_ms
                        .map(|e| format!("{:.2}s", secs(e.saturating_sub(st.start_ms))))
                        .unwrap_or_else(|| "-".into())
                );
                if let Some(d) = &st.detail {
                    let _ = writeln!(s, "              {d}");
                }
            }
            let told = p.steps.iter().any(|st| st.detail.is_some());
            if let (Some(why), false) = (&p.why, told) {
                let _ = writeln!(s, "            why: {why}");
            }
            if let Some(w) = p.write_unavailability_secs {
                let _ = writeln!(
                    s,
                    "            write-unavailability (drdctl): {w:.2}s; WAL lost: {}",
                    p.lost_bytes
                        .map_or("unknown".into(), |b| format!("{b} bytes"))
                );
            }
        }
        let _ = writeln!(
            s,
            "  writes: {} sent, {} acknowledged, {} failed",
            self.writes.sent, self.writes.acknowledged, self.writes.failed
        );
        let _ = writeln!(
            s,
            "  reads:  {} sent, {} answered, {} failed",
            self.reads.sent, self.reads.acknowledged, self.reads.failed
        );
        if let Some(g) = self.client_write_gap_secs {
            let _ = writeln!(
                s,
                "  longest time without an acknowledged write (client side): {g:.2}s"
            );
        }
        let answers: Vec<String> = self
            .dns_answers
            .iter()
            .map(|(at, a)| format!("{:.1}s {}", secs(*at), a.join(",")))
            .collect();
        let _ = writeln!(s, "  DNS answers seen: {}", answers.join(" -> "));
        let _ = writeln!(
            s,
            "  two writable databases: {} of {} samples",
            self.split_brain.both_writable_at_ms.len(),
            self.split_brain.samples
        );
        let _ = writeln!(
            s,
            "  acknowledged writes missing afterwards: {} (in {}'s database)",
            self.acknowledged_writes_missing
                .map_or("not checked".into(), |n| n.to_string()),
            self.active_region_after
        );
        if !self.missing_examples.is_empty() {
            let _ = writeln!(s, "    e.g. {}", self.missing_examples.join(", "));
        }
        s
    }

    /// The report and every request, for tools.
    pub fn json(&self, log: &TrafficLog) -> serde_json::Value {
        serde_json::json!({
            "passed": self.passed(),
            "failures": self.failures(),
            "report": self,
            "requests": log.requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_failover(why: Option<&str>) -> Report {
        let steps = super::super::steps_of(
            &serde_json::json!({"outcome": "stopped", "why": why, "run": {"steps": [
                {"name": "promote-target", "state": "done", "detail": "dr promoted",
                 "started": "2026-12-03T10:00:01Z", "ended": "2026-12-03T10:00:02Z"},
                {"name": "rejoin-source", "state": "failed",
                 "detail": "start.sh exited: pg_rewind failed",
                 "started": "2026-12-03T10:00:02Z", "ended": "2026-12-03T10:00:03Z"},
            ]}}),
            "2026-12-03T10:00:00Z".parse().unwrap(),
        );
        let phase = Phase {
            name: "failover".into(),
            command: "drdctl failover --to dr".into(),
            start_ms: 0,
            end_ms: 3000,
            exit_code: Some(3),
            steps,
            write_unavailability_secs: None,
            lost_bytes: None,
            why: why.map(str::to_string),
        };
        Report::new(Inputs {
            up_secs: 1.0,
            fqdn: "app.example.com".into(),
            phases: vec![phase],
            log: &TrafficLog::default(),
            missing: Some(Vec::new()),
            active_region: "dr".into(),
            watch: WritableWatch::default(),
        })
    }

    #[test]
    fn a_failed_step_says_why_in_the_report_and_a_done_one_keeps_quiet() {
        let r = failed_failover(Some("step rejoin-source failed: pg_rewind failed"));
        let steps = &r.phases[0].steps;
        assert_eq!(
            steps[0].detail, None,
            "a done step's detail is not repeated"
        );
        assert_eq!(
            steps[1].detail.as_deref(),
            Some("start.sh exited: pg_rewind failed")
        );
        let text = r.render();
        assert!(text.contains("rejoin-source            failed"), "{text}");
        assert!(text.contains("start.sh exited: pg_rewind failed"), "{text}");
        assert!(!text.contains("dr promoted"), "{text}");
        // The step's own detail says it; the command's summary is not printed twice.
        assert!(!text.contains("why: step rejoin-source"), "{text}");
        assert!(!r.passed());
    }

    #[test]
    fn a_command_that_stopped_before_any_step_gives_its_reason() {
        let mut r = failed_failover(Some("refused: dr is not a streaming standby"));
        r.phases[0].steps.clear();
        let text = r.render();
        assert!(
            text.contains("why: refused: dr is not a streaming standby"),
            "{text}"
        );
    }
}
