//! Group commit for `POST /ingest` of one record (`GROUP_COMMIT_US`, `GROUP_COMMIT_WRITERS`).
//!
//! Leader/follower, adaptive. A request that finds no batch being gathered and fewer than
//! `writers` inserts in flight leads: when it is the only request the service is serving, it
//! writes its own row at once on a lane, exactly as without group commit (no hand-off, no
//! wait). When other requests are in flight it first lets the runtime run once more
//! (`yield_now`: the requests already read, and those the poll of the sockets finds, reach this
//! point meanwhile and queue behind it), then takes what queued: nothing, and it writes its own
//! row as above; something, and all of them, its own row among them, go as one multi-row
//! `INSERT ... RETURNING id` (one statement, so one commit: one WAL flush for all of them),
//! written by a task of its own (a request dropped while it waits, client gone or timed out,
//! cannot take the others' write with it). A request that arrives while `writers` inserts are
//! in flight queues too; the first in an empty queue starts a drainer task that waits for one
//! of them to finish (at most the window, then it writes on a connection of its own) and
//! writes everything queued by then as one statement.
//!
//! Each request is answered with its own id only after that commit returned, so a 201 means
//! the row is durable exactly as without group commit (`synchronous_commit` decides, as
//! always). If a batch fails with an error the server reported (a row it refused), each row is
//! retried alone, so a bad row fails only its own request; any other error (the connection)
//! fails the batch's requests with it, and none of them was answered 201.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::db::Lanes;

use crate::api::{INSERT_MANY, INSERT_ONE};
use tokio::sync::{oneshot, Notify};

/// The most rows in one statement (bounded bind arrays and statement time).
const MAX_BATCH: usize = 512;

struct Pending {
    data_type: String,
    source: String,
    payload: String,
    reply: oneshot::Sender<Result<i64, sqlx::Error>>,
}

impl Pending {
    fn new(
        data_type: &str,
        source: &str,
        payload: &str,
    ) -> (Pending, oneshot::Receiver<Result<i64, sqlx::Error>>) {
        let (reply, answer) = oneshot::channel();
        let p = Pending {
            data_type: data_type.to_string(),
            source: source.to_string(),
            payload: payload.to_string(),
            reply,
        };
        (p, answer)
    }
}

/// The group commit; cheap to share.
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Arc<Lanes>,
    window: Duration,
    writers: usize,
    state: Mutex<State>,
    /// A writer finished (only signalled while a drainer waits).
    freed: Notify,
}

#[derive(Default)]
struct State {
    /// Inserts in flight: requests writing their own row, and batches being written.
    writing: usize,
    /// A leader is gathering: requests arriving now queue for its batch.
    gathering: bool,
    /// Requests waiting for the next batch.
    queue: Vec<Pending>,
    /// A drainer has been started for the queue and has not taken it yet.
    drainer: bool,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One insert in flight; counted out when it ends or is dropped, waking a waiting drainer.
struct Writing(Arc<Inner>);

impl Drop for Writing {
    fn drop(&mut self) {
        let waiting = {
            let mut st = self.0.state();
            st.writing -= 1;
            st.drainer
        };
        if waiting {
            self.0.freed.notify_one();
        }
    }
}

/// A leader gathering; if it is dropped before it took the queue (client gone), the queue goes
/// to a drainer.
struct Gathering<'a>(Option<&'a Arc<Inner>>);

impl Drop for Gathering<'_> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            let start = {
                let mut st = inner.state();
                st.gathering = false;
                !st.queue.is_empty() && !std::mem::replace(&mut st.drainer, true)
            };
            if start {
                tokio::spawn(inner.clone().drain());
            }
        }
    }
}

impl GroupCommit {
    /// Group commit on `lanes`: at most `writers` inserts in flight before requests queue,
    /// a queued request waiting at most `window` for one of them.
    pub fn start(lanes: Arc<Lanes>, window: Duration, writers: usize) -> GroupCommit {
        GroupCommit {
            inner: Arc::new(Inner {
                lanes,
                window,
                writers: writers.max(1),
                state: Mutex::default(),
                freed: Notify::new(),
            }),
        }
    }

    /// Stores one record; its id once the row is committed. `alone`: no other request is
    /// being served (nothing to gather).
    pub async fn insert(
        &self,
        data_type: &str,
        source: &str,
        payload: &str,
        alone: bool,
    ) -> Result<i64, sqlx::Error> {
        let inner = &self.inner;
        enum Role {
            Alone,
            Gather,
            Queued(oneshot::Receiver<Result<i64, sqlx::Error>>, bool),
        }
        let role = {
            let mut st = inner.state();
            if !st.gathering && st.writing < inner.writers && st.queue.is_empty() {
                if alone {
                    st.writing += 1;
                    Role::Alone
                } else {
                    st.gathering = true;
                    Role::Gather
                }
            } else {
                let (p, answer) = Pending::new(data_type, source, payload);
                st.queue.push(p);
                // A gathering leader takes the queue; otherwise a drainer, once.
                let start = !st.gathering && !std::mem::replace(&mut st.drainer, true);
                Role::Queued(answer, start)
            }
        };
        let batch = match role {
            // Nobody to wait for: this request's own row, at once, on its own lane.
            Role::Alone => Vec::new(),
            // Others are in flight: let them reach this point, then take what queued.
            Role::Gather => {
                let mut gathering = Gathering(Some(inner));
                tokio::task::yield_now().await;
                gathering.0 = None;
                let mut st = inner.state();
                st.gathering = false;
                st.writing += 1;
                std::mem::take(&mut st.queue)
            }
            Role::Queued(answer, start) => {
                if start {
                    tokio::spawn(inner.clone().drain());
                }
                return answer.await.map_err(|_| sqlx::Error::PoolClosed)?;
            }
        };
        let writing = Writing(inner.clone());
        if batch.is_empty() {
            let mut lane = inner.lanes.take().await?;
            let result = sqlx::query_scalar::<_, i64>(INSERT_ONE)
                .bind(data_type)
                .bind(source)
                .bind(payload)
                .fetch_all(&mut lane.conn)
                .await;
            lane.done(&result);
            drop(writing);
            return one_id(result);
        }
        // A batch: written by a task of its own, this request's row first.
        let (p, answer) = Pending::new(data_type, source, payload);
        let mut all = Vec::with_capacity(batch.len() + 1);
        all.push(p);
        all.extend(batch);
        let lanes = inner.lanes.clone();
        tokio::spawn(async move {
            let _writing = writing;
            write_all(&lanes, all).await;
        });
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

fn one_id(result: Result<Vec<i64>, sqlx::Error>) -> Result<i64, sqlx::Error> {
    result?
        .first()
        .copied()
        .ok_or_else(|| sqlx::Error::Protocol("the insert returned no id".into()))
}

/// Writes `batch` in statements of at most [`MAX_BATCH`] rows.
async fn write_all(lanes: &Lanes, mut batch: Vec<Pending>) {
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_BATCH));
        run(lanes, batch).await;
        batch = rest;
    }
}

impl Inner {
    /// Waits for a free writer (at most the window), then writes everything queued.
    async fn drain(self: Arc<Self>) {
        let deadline = tokio::time::Instant::now() + self.window;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.state().writing < self.writers {
                break;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break;
            }
        }
        let batch = {
            let mut st = self.state();
            st.writing += 1;
            st.drainer = false;
            std::mem::take(&mut st.queue)
        };
        let _writing = Writing(self.clone());
        write_all(&self.lanes, batch).await;
    }
}

fn again(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(format!("the group commit's batch failed: {e}"))
}

async fn run(lanes: &Lanes, batch: Vec<Pending>) {
    let mut lane = match lanes.take().await {
        Ok(l) => l,
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(again(&e)));
            }
            return;
        }
    };
    let result = if batch.len() == 1 {
        let p = &batch[0];
        sqlx::query_scalar::<_, i64>(INSERT_ONE)
            .bind(&p.data_type)
            .bind(&p.source)
            .bind(&p.payload)
            .fetch_all(&mut lane.conn)
            .await
    } else {
        let types: Vec<&str> = batch.iter().map(|p| p.data_type.as_str()).collect();
        let sources: Vec<&str> = batch.iter().map(|p| p.source.as_str()).collect();
        let payloads: Vec<&str> = batch.iter().map(|p| p.payload.as_str()).collect();
        sqlx::query_scalar::<_, i64>(INSERT_MANY)
            .bind(types)
            .bind(sources)
            .bind(payloads)
            .fetch_all(&mut lane.conn)
            .await
    };
    lane.done(&result);
    match result {
        Ok(ids) if ids.len() == batch.len() => {
            for (p, id) in batch.into_iter().zip(ids) {
                let _ = p.reply.send(Ok(id));
            }
        }
        Ok(ids) => {
            let e = sqlx::Error::Protocol(format!(
                "the batch insert returned {} ids for {} rows",
                ids.len(),
                batch.len()
            ));
            for p in batch {
                let _ = p.reply.send(Err(again(&e)));
            }
        }
        // The server refused the statement (a row it would not take): nothing of the batch
        // was stored; each row alone, so only the bad one fails.
        Err(e) if e.as_database_error().is_some() && batch.len() > 1 => {
            for p in batch {
                let one = async {
                    let mut lane = lanes.take().await?;
                    let r = sqlx::query_scalar::<_, i64>(INSERT_ONE)
                        .bind(&p.data_type)
                        .bind(&p.source)
                        .bind(&p.payload)
                        .fetch_one(&mut lane.conn)
                        .await;
                    lane.done(&r);
                    r
                }
                .await;
                let _ = p.reply.send(one);
            }
        }
        Err(e) => {
            let mut batch = batch.into_iter();
            if let Some(first) = batch.next() {
                for p in batch {
                    let _ = p.reply.send(Err(again(&e)));
                }
                let _ = first.reply.send(Err(e));
            }
        }
    }
}
