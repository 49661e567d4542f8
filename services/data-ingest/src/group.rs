//! Group commit for `POST /ingest` of one record (opt-in: `GROUP_COMMIT_US`).
//!
//! Concurrent single-record requests are gathered into one multi-row `INSERT ... RETURNING id`
//! (one statement, so one commit: one WAL flush for all of them) and each request is answered
//! with its own id only after that commit returned, so a 201 means the row is durable exactly
//! as without group commit (`synchronous_commit` decides, as always). A batch waits for more
//! requests only while more are in flight, and never longer than the window from its first:
//! one client alone pays no wait. If the batch fails with an error the server reported (a row
//! it refused), each row is retried alone, so a bad row fails only its own request; any other
//! error (the connection) fails the batch's requests with it, and none of them was answered
//! 201.
//!
//! Workers: as many as the lanes (connections); one gathers while the others insert.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::db::Lanes;

use crate::api::{INSERT_MANY, INSERT_ONE};
use tokio::sync::{mpsc, oneshot, Mutex};

/// The most rows in one statement (bounded bind arrays and statement time).
const MAX_BATCH: usize = 512;

struct Pending {
    data_type: String,
    source: String,
    payload: String,
    reply: oneshot::Sender<Result<i64, sqlx::Error>>,
}

/// The gatherer; cheap to share.
pub struct GroupCommit {
    tx: mpsc::Sender<Pending>,
    counts: Arc<Counts>,
}

/// Requests inside `insert`, and those of them in a batch being written.
#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    writing: AtomicUsize,
}

impl GroupCommit {
    /// Starts `workers` workers gathering for at most `window`.
    pub fn start(lanes: Arc<Lanes>, window: Duration, workers: usize) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Pending>(4096);
        let rx = Arc::new(Mutex::new(rx));
        let counts = Arc::new(Counts::default());
        for _ in 0..workers.max(1) {
            tokio::spawn(worker(rx.clone(), lanes.clone(), window, counts.clone()));
        }
        GroupCommit { tx, counts }
    }

    /// Stores one record; its id once the row is committed.
    pub async fn insert(
        &self,
        data_type: &str,
        source: &str,
        payload: &str,
    ) -> Result<i64, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.counts.in_flight.fetch_add(1, Ordering::SeqCst);
        let _done = InFlight(&self.counts.in_flight);
        self.tx
            .send(Pending {
                data_type: data_type.to_string(),
                source: source.to_string(),
                payload: payload.to_string(),
                reply,
            })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Counts a request out when it is answered or dropped (client gone).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn worker(
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    lanes: Arc<Lanes>,
    window: Duration,
    counts: Arc<Counts>,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + window;
            while batch.len() < MAX_BATCH {
                // Everything already queued, at once.
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                // Wait only while more requests are on their way than gathered (those in
                // batches being written do not count), and not past the window.
                let coming = counts
                    .in_flight
                    .load(Ordering::SeqCst)
                    .saturating_sub(counts.writing.load(Ordering::SeqCst));
                if coming <= batch.len() {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    _ => break,
                }
            }
            batch
        };
        let n = batch.len();
        counts.writing.fetch_add(n, Ordering::SeqCst);
        run(&lanes, batch).await;
        counts.writing.fetch_sub(n, Ordering::SeqCst);
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
