//! Verify's output: a table for people, JSON for programs, JUnit XML for CI systems.

use std::fmt::Write;

use super::{CheckResult, Status};

/// The table: check, region, status, detail, time.
pub fn table(results: &[CheckResult]) -> String {
    let w_check = results
        .iter()
        .map(|r| r.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let w_region = results
        .iter()
        .map(|r| r.region.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w_check$}  {:<w_region$}  {:<6}  {:>7}  DETAIL",
        "CHECK", "REGION", "STATUS", "TIME"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<w_check$}  {:<w_region$}  {:<6}  {:>5}ms  {}",
            r.check,
            r.region.as_deref().unwrap_or("-"),
            r.status.as_str().to_uppercase(),
            r.elapsed_ms,
            r.detail
        );
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} warnings, {} skipped",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Warn),
        count(Status::Skip)
    );
    out
}

/// `{"results":[...],"summary":{...}}`
pub fn json(results: &[CheckResult], wall_ms: u64) -> String {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let doc = serde_json::json!({
        "results": results,
        "summary": {
            "passed": count(Status::Pass),
            "failed": count(Status::Fail),
            "warnings": count(Status::Warn),
            "skipped": count(Status::Skip),
            "wall_ms": wall_ms,
        }
    });
    serde_json::to_string_pretty(&doc).expect("serialisable")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite, one testcase per check (classname = region).
pub fn junit(results: &[CheckResult], wall_ms: u64) -> String {
    let failures = results.iter().filter(|r| r.status == Status::Fail).count();
    let skipped = results.iter().filter(|r| r.status == Status::Skip).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"drdctl verify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
        results.len(),
        wall_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"drdctl verify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
        results.len(),
        wall_ms as f64 / 1000.0
    );
    for r in results {
        let class = format!("verify.{}", r.region.as_deref().unwrap_or("global"));
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&class),
            xml_escape(&r.check),
            r.elapsed_ms as f64 / 1000.0
        );
        let detail = xml_escape(&r.detail);
        match r.status {
            Status::Pass => {
                let _ = writeln!(out, "/>");
            }
            Status::Warn => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>warning: {detail}</system-out>\n    </testcase>"
                );
            }
            Status::Skip => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{detail}\"/>\n    </testcase>"
                );
            }
            Status::Fail => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{detail}\" type=\"check failed\">{detail}</failure>\n    </testcase>"
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
