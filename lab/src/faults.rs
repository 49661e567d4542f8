//! Fault injection both doubles share (the Kubernetes API's and Azure's): added latency and a
//! queue of failures to answer next, plus the bounded log of what clients sent.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How many requests a log keeps; older ones are dropped first.
const LOG_CAPACITY: usize = 10_000;

/// Locks `m`, taking over the state of a thread that panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The knobs tests turn: latency before every response, failures `F` answered instead of the
/// next requests, and what else a double injects (`X`).
pub struct Faults<F, X = ()> {
    state: Mutex<State<F, X>>,
}

struct State<F, X> {
    latency: Duration,
    next: VecDeque<F>,
    extra: X,
}

impl<F, X: Default> State<F, X> {
    fn empty() -> Self {
        State {
            latency: Duration::ZERO,
            next: VecDeque::new(),
            extra: X::default(),
        }
    }
}

impl<F, X: Default> Default for Faults<F, X> {
    fn default() -> Self {
        Faults {
            state: Mutex::new(State::empty()),
        }
    }
}

impl<F: fmt::Debug, X: fmt::Debug> fmt::Debug for Faults<F, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("Faults")
            .field("latency", &s.latency)
            .field("next", &s.next)
            .field("extra", &s.extra)
            .finish()
    }
}

impl<F, X: Default> Faults<F, X> {
    /// Adds `latency` before every response (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// The current added latency.
    pub fn latency(&self) -> Duration {
        lock(&self.state).latency
    }

    /// How many queued failures are still pending.
    pub fn pending(&self) -> usize {
        lock(&self.state).next.len()
    }

    /// Removes every fault.
    pub fn clear(&self) {
        *lock(&self.state) = State::empty();
    }

    /// Queues `n` failures, each made by `fault`.
    pub(crate) fn push_next(&self, n: usize, fault: impl Fn() -> F) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.next.push_back(fault());
        }
    }

    /// The failure to answer the next request with, if one is queued.
    pub(crate) fn take_next(&self) -> Option<F> {
        lock(&self.state).next.pop_front()
    }

    /// The latency to add and the failure to answer with, for one request (under one lock).
    pub(crate) fn take(&self) -> (Duration, Option<F>) {
        let mut s = lock(&self.state);
        (s.latency, s.next.pop_front())
    }

    /// Reads or changes the double's other faults.
    pub(crate) fn extra<T>(&self, f: impl FnOnce(&mut X) -> T) -> T {
        f(&mut lock(&self.state).extra)
    }
}

/// The most recent requests (bounded), oldest first.
#[derive(Debug)]
pub struct RequestLog<R> {
    entries: Mutex<VecDeque<R>>,
}

impl<R> Default for RequestLog<R> {
    fn default() -> Self {
        RequestLog {
            entries: Mutex::new(VecDeque::new()),
        }
    }
}

impl<R: Clone> RequestLog<R> {
    pub(crate) fn push(&self, r: R) {
        let mut e = lock(&self.entries);
        if e.len() >= LOG_CAPACITY {
            e.pop_front();
        }
        e.push_back(r);
    }

    /// A copy of the recorded requests, oldest first.
    pub fn snapshot(&self) -> Vec<R> {
        lock(&self.entries).iter().cloned().collect()
    }

    /// Forgets every recorded request.
    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}
