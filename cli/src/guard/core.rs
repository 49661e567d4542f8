//! The guard's decisions, pure: no clock, no network. Time is a [`Duration`] since an origin
//! of the caller's (the guard: `CLOCK_BOOTTIME`; the simulation: its virtual clock), so the
//! deterministic simulation drives exactly this code.
//!
//! The rule (docs/witness.md): a writable database stays writable only while its guard has
//! confirmed, less than `lease` ago counted from the *send* time of the confirming request,
//! that the term names its own region: from the witness, or (the witness unreachable) from
//! the other region's guard, which vouches only while its own database still streams from
//! this one. A term naming the other region fences for good (superseded: only a rejoin
//! brings the database back). Nothing here ever lifts a fence.

use std::time::Duration;

use serde::Serialize;

/// The lease arithmetic (docs/witness.md, "Lease math").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// How often the guard reads the term.
    pub poll: Duration,
    /// Bound on one read (a later answer counts as none).
    pub timeout: Duration,
    /// `L_g`: the guard starts fencing this long after the send time of its last confirmation.
    pub lease: Duration,
    /// `F`: the fence completes within this.
    pub fence_budget: Duration,
    /// `P`: the longest stall of the guard the watchdog covers (its check interval).
    pub pause_bound: Duration,
    /// `D`: clock error between the operator's timer and the guard's.
    pub clock_error: Duration,
    /// `W`: how long an emergency failover waits after moving the term before promoting.
    pub wait: Duration,
}

impl Timing {
    /// Production defaults: poll 2 s (1.5 s timeout), `L_g` 10 s, `F` 1 s, `P` 1 s, `D` 0.5 s,
    /// `W` 15 s.
    pub fn production() -> Self {
        Timing {
            poll: Duration::from_millis(2000),
            timeout: Duration::from_millis(1500),
            lease: Duration::from_secs(10),
            fence_budget: Duration::from_secs(1),
            pause_bound: Duration::from_secs(1),
            clock_error: Duration::from_millis(500),
            wait: Duration::from_secs(15),
        }
    }

    /// The lab's: poll 1 s (0.8 s timeout), `L_g` 5 s, `W` 8 s; shorter than production so
    /// the tests are quick, long enough that a loaded 2-core machine does not fence a healthy
    /// primary.
    pub fn lab() -> Self {
        Timing {
            poll: Duration::from_millis(1000),
            timeout: Duration::from_millis(800),
            lease: Duration::from_secs(5),
            fence_budget: Duration::from_secs(1),
            pause_bound: Duration::from_millis(500),
            clock_error: Duration::from_millis(500),
            wait: Duration::from_secs(8),
        }
    }

    /// The smallest safe `W`: `L_g + F + P + D`.
    pub fn min_wait(&self) -> Duration {
        self.lease + self.fence_budget + self.pause_bound + self.clock_error
    }

    /// Refuses settings that break the inequality or leave the lease under three polls. The
    /// error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.poll.is_zero() {
            return Err(("poll_ms", "must be more than 0".into()));
        }
        if self.timeout >= self.poll {
            return Err((
                "timeout_ms",
                format!(
                    "{:?} must be shorter than poll_ms ({:?}): a read must end before the next",
                    self.timeout, self.poll
                ),
            ));
        }
        if self.lease < self.poll * 3 {
            return Err((
                "lease_ms",
                format!(
                    "{:?} must cover at least three polls ({:?}), or one lost answer fences a healthy primary",
                    self.lease,
                    self.poll * 3
                ),
            ));
        }
        if self.wait < self.min_wait() {
            return Err((
                "wait_ms",
                format!(
                    "{:?} is shorter than lease + fence budget + pause bound + clock error = {:?}: \
                     an emergency failover could promote while the old primary still takes writes",
                    self.wait,
                    self.min_wait()
                ),
            ));
        }
        Ok(())
    }
}

/// What the guard's own database is, as it last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Local {
    /// A primary that takes writes.
    Writable,
    /// A primary fenced read-only.
    Fenced,
    /// A standby streaming from the other region.
    StreamingStandby,
    /// A standby not streaming (sealed for promotion, or replication broken).
    Standby,
    /// Not answering.
    Down,
}

/// Why the guard fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FenceReason {
    /// The term names the other region.
    Superseded { region: String, n: u64 },
    /// No confirmation for longer than the lease.
    Unconfirmed { since_ms: u64 },
}

impl std::fmt::Display for FenceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceReason::Superseded { region, n } => {
                write!(f, "the term names {region} (n={n})")
            }
            FenceReason::Unconfirmed { since_ms } => write!(
                f,
                "the term was not confirmed for {:.1} s (witness and peer unreachable)",
                *since_ms as f64 / 1000.0
            ),
        }
    }
}

/// The guard's state.
#[derive(Debug, Clone, Serialize)]
pub struct Guard {
    pub region: String,
    pub timing: Timing,
    /// The highest term seen (region, n).
    pub highest: Option<(String, u64)>,
    /// Send time of the read that last gave the highest term.
    pub highest_at: Option<Duration>,
    /// Send time of the last confirmation that the term names this region.
    pub confirmed_at: Option<Duration>,
    /// Since when the database is writable, as observed (`None`: it is not).
    pub writable_since: Option<Duration>,
    /// When the guard started (the first lease counts from here: a guard that just started
    /// has not confirmed anything, and start.sh only started a primary on a term naming it).
    pub started: Duration,
    /// The database as last observed.
    pub last_local: Option<Local>,
    /// The database as last observed answering (a database that stops answering the guard
    /// is taken to be what it last was: a writable one that only looks down is fenced).
    pub last_answer: Option<Local>,
    /// A database that just became writable by promotion or by drdctl's unfence (never by a
    /// restart) has one lease from that moment to be confirmed: the run moved the term to
    /// this region just before, and the guard's next read confirms it.
    pub grace_until: Option<Duration>,
}

impl Guard {
    pub fn new(region: &str, timing: Timing, now: Duration) -> Self {
        Guard {
            region: region.to_string(),
            timing,
            highest: None,
            highest_at: None,
            confirmed_at: None,
            writable_since: None,
            started: now,
            last_local: None,
            last_answer: None,
            grace_until: None,
        }
    }

    /// Records what the database is now (the guard at every poll, the watchdog at every check).
    pub fn observe(&mut self, now: Duration, local: Local) {
        let promoted = matches!(
            self.last_local,
            Some(Local::Standby | Local::StreamingStandby | Local::Fenced)
        ) && local == Local::Writable;
        if promoted {
            self.grace_until = Some(now + self.timing.lease);
        }
        if local != Local::Down {
            if local == Local::Writable {
                self.writable_since.get_or_insert(now);
            } else {
                self.writable_since = None;
            }
            self.last_answer = Some(local);
        }
        self.last_local = Some(local);
    }

    /// The witness answered (at send time `sent`) with `term` (`None`: none was ever written,
    /// which confirms nothing).
    pub fn on_witness(&mut self, sent: Duration, term: Option<(&str, u64)>) {
        let Some((region, n)) = term else { return };
        if self.highest.as_ref().is_some_and(|(_, h)| n < *h) {
            return; // an older answer than one already seen (a late reply)
        }
        self.highest = Some((region.to_string(), n));
        self.highest_at = Some(self.highest_at.map_or(sent, |h| h.max(sent)));
        if region == self.region {
            self.confirm(sent);
        }
    }

    /// The term names the other region, read after the database became writable (a read from
    /// before a promotion says nothing about the promoted database).
    pub fn superseded(&self) -> Option<(String, u64)> {
        let (region, n) = self.highest.clone()?;
        let fresh = match (self.highest_at, self.writable_since) {
            (Some(read), Some(since)) => read >= since,
            _ => true,
        };
        (region != self.region && fresh).then_some((region, n))
    }

    /// The other region's guard vouched (request sent at `sent`) that the term it knows is
    /// this region's `n`.
    pub fn on_peer_confirm(&mut self, sent: Duration, n: u64) {
        if self
            .highest
            .as_ref()
            .is_some_and(|(r, h)| *r == self.region && *h == n)
        {
            self.confirm(sent);
        }
    }

    fn confirm(&mut self, sent: Duration) {
        self.confirmed_at = Some(self.confirmed_at.map_or(sent, |c| c.max(sent)));
    }

    /// The instant the lease runs out: fencing starts then.
    pub fn lease_until(&self) -> Duration {
        let lease = self.confirmed_at.unwrap_or(self.started) + self.timing.lease;
        self.grace_until.map_or(lease, |g| g.max(lease))
    }

    /// Whether the database is to be taken as writable: not answering the guard (overloaded,
    /// hung) is not "not writable", since clients may still get through; it is judged by what
    /// it last answered (the fence then fails and the stop command runs).
    pub fn looks_writable(&self, local: Local) -> bool {
        match local {
            Local::Down => self.last_answer == Some(Local::Writable),
            other => other == Local::Writable,
        }
    }

    /// Whether the database must be fenced now, and why. Only a writable database is fenced;
    /// the guard never lifts a fence.
    pub fn must_fence(&self, now: Duration, local: Local) -> Option<FenceReason> {
        if !self.looks_writable(local) {
            return None;
        }
        if let Some((region, n)) = self.superseded() {
            return Some(FenceReason::Superseded { region, n });
        }
        let since = self.confirmed_at.unwrap_or(self.started);
        (now >= self.lease_until()).then_some(FenceReason::Unconfirmed {
            since_ms: now.saturating_sub(since).as_millis() as u64,
        })
    }

    /// Whether to vouch for the other region's term `(region, n)`: only while this database
    /// still streams from it (sealing a standby for promotion stops its vouching) and this
    /// guard knows no newer term.
    pub fn vouches(&self, region: &str, n: u64, local: Local) -> bool {
        region != self.region
            && local == Local::StreamingStandby
            && self
                .highest
                .as_ref()
                .is_some_and(|(r, h)| r == region && *h == n)
    }
}

impl Guard {
    /// The watchdog's decision at one of its checks: it observes the database every time (so
    /// that a standby promoted before the lease deadline is seen as a promotion, with one
    /// lease of grace, as the guard sees it), and once `deadline` (the lease the guard last
    /// wrote) has passed it fences a writable database outside that grace.
    pub fn watchdog_check(
        &mut self,
        now: Duration,
        deadline: Option<Duration>,
        local: Local,
    ) -> Option<FenceReason> {
        self.observe(now, local);
        let passed = deadline.filter(|d| now >= *d)?;
        let in_grace = self.grace_until.is_some_and(|g| now < g);
        (self.looks_writable(local) && !in_grace).then(|| FenceReason::Unconfirmed {
            since_ms: (now - passed + self.timing.lease).as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn production_and_lab_timings_are_safe() {
        Timing::production().validate().unwrap();
        Timing::lab().validate().unwrap();
        let mut t = Timing::production();
        t.wait = s(12_000);
        let (key, msg) = t.validate().unwrap_err();
        assert_eq!(key, "wait_ms");
        assert!(msg.contains("12.5"), "{msg}");
        t = Timing::production();
        t.lease = s(5000);
        assert_eq!(t.validate().unwrap_err().0, "lease_ms");
    }

    /// The drill's failure: DR's guard started, and drdctl promoted DR just before that
    /// guard's first lease (from its start) ran out. The watchdog, watching at every check,
    /// saw the standby and then the promotion: grace, not a fence.
    #[test]
    fn the_watchdog_gives_a_standby_promoted_before_its_first_deadline_the_grace() {
        let deadline = Some(s(5000));
        let mut w = Guard::new("dr", Timing::lab(), s(0));
        for ms in (0..4750).step_by(250) {
            assert_eq!(
                w.watchdog_check(s(ms), deadline, Local::StreamingStandby),
                None
            );
        }
        assert_eq!(w.watchdog_check(s(4750), deadline, Local::Writable), None);
        assert_eq!(w.watchdog_check(s(5100), deadline, Local::Writable), None);
        // Still unconfirmed when the grace is over: fenced.
        assert!(matches!(
            w.watchdog_check(s(9800), deadline, Local::Writable),
            Some(FenceReason::Unconfirmed { .. })
        ));
        // A watchdog whose first sight, past the deadline, is a writable database (restarted
        // beside a primary) gives no grace.
        let mut r = Guard::new("dr", Timing::lab(), s(0));
        assert!(r
            .watchdog_check(s(5100), deadline, Local::Writable)
            .is_some());
        // Before the deadline nothing is fenced, whatever it sees.
        let mut e = Guard::new("dr", Timing::lab(), s(0));
        assert_eq!(e.watchdog_check(s(1000), deadline, Local::Writable), None);
    }

    #[test]
    fn a_confirmation_holds_for_the_lease_from_its_send_time() {
        let mut g = Guard::new("primary", Timing::lab(), s(0));
        g.on_witness(s(100), Some(("primary", 1)));
        assert_eq!(g.must_fence(s(5099), Local::Writable), None);
        assert!(matches!(
            g.must_fence(s(5100), Local::Writable),
            Some(FenceReason::Unconfirmed { .. })
        ));
        assert_eq!(g.must_fence(s(9000), Local::Fenced), None);
    }

    #[test]
    fn a_newer_term_for_the_other_region_fences_for_good() {
        let mut g = Guard::new("primary", Timing::lab(), s(0));
        g.observe(s(0), Local::Writable);
        g.on_witness(s(0), Some(("primary", 1)));
        g.on_witness(s(500), Some(("dr", 2)));
        assert_eq!(
            g.must_fence(s(600), Local::Writable),
            Some(FenceReason::Superseded {
                region: "dr".into(),
                n: 2
            })
        );
        // A late answer with the old term changes nothing.
        g.on_witness(s(700), Some(("primary", 1)));
        assert!(g.must_fence(s(800), Local::Writable).is_some());
    }

    #[test]
    fn a_promoted_database_has_one_lease_to_be_confirmed_a_restarted_one_none() {
        let mut g = Guard::new("dr", Timing::lab(), s(0));
        g.observe(s(100), Local::StreamingStandby);
        // The last read, before the promotion, named the primary: it does not count.
        g.on_witness(s(9_500), Some(("primary", 1)));
        g.observe(s(10_000), Local::Writable);
        assert_eq!(g.must_fence(s(14_000), Local::Writable), None);
        assert!(g.must_fence(s(15_000), Local::Writable).is_some());
        let mut g = Guard::new("primary", Timing::lab(), s(0));
        g.observe(s(100), Local::Down);
        g.observe(s(10_000), Local::Writable);
        assert!(g.must_fence(s(10_000), Local::Writable).is_some());
    }

    #[test]
    fn a_writable_database_that_stops_answering_is_still_fenced_a_standby_is_not() {
        let mut g = Guard::new("primary", Timing::lab(), s(0));
        g.on_witness(s(0), Some(("primary", 1)));
        g.observe(s(100), Local::Writable);
        g.observe(s(2000), Local::Down);
        assert!(g.must_fence(s(6000), Local::Down).is_some());
        let mut d = Guard::new("dr", Timing::lab(), s(0));
        d.observe(s(100), Local::StreamingStandby);
        d.observe(s(2000), Local::Down);
        assert_eq!(d.must_fence(s(60_000), Local::Down), None);
    }

    #[test]
    fn the_peer_vouches_only_while_streaming_and_for_the_term_it_knows() {
        let mut dr = Guard::new("dr", Timing::lab(), s(0));
        dr.on_witness(s(0), Some(("primary", 4)));
        assert!(dr.vouches("primary", 4, Local::StreamingStandby));
        assert!(!dr.vouches("primary", 4, Local::Standby), "sealed");
        assert!(!dr.vouches("primary", 3, Local::StreamingStandby));
        let mut p = Guard::new("primary", Timing::lab(), s(0));
        p.on_witness(s(0), Some(("primary", 4)));
        p.on_peer_confirm(s(2500), 4);
        assert_eq!(p.must_fence(s(7000), Local::Writable), None);
        p.on_peer_confirm(s(2600), 3);
        assert!(p.must_fence(s(7500), Local::Writable).is_some());
    }
}
