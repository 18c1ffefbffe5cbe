//! Group commit toward the task store. Up to `concurrency` jobs run at once
//! and each wants a load at its start and a write-back after each portal
//! answer; on SQLite (one writer, a small pool) those calls mostly wait for
//! each other. The batcher turns the queue of waiting calls into few calls:
//!
//! - **write-backs** go through one writer loop: whatever is waiting when
//!   the previous transaction ends becomes one `write_back` of all their
//!   updates (the store applies several updates in order, as if called one
//!   by one). Each caller gets its answer only when that transaction is
//!   committed — durable before any acknowledgement, as before. Lease
//!   releases go through the same loop, so the store sees one writer.
//! - **loads** waiting at the same time become one `load` of all their ids
//!   (a few such loads may run at once: readers do not block in WAL mode).
//!
//! If a batched call fails, each caller's part is tried again alone, so an
//! error reaches exactly the jobs it belongs to. The write-back counts go
//! into the metrics here, once per transaction.

use std::collections::HashSet;
use std::sync::Arc;

use task_model::store::{AnyStore, RowError, StoreError, TaskStore, WriteBackReport};
use task_model::{LocalTask, PortalTask, TaskId};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::Metrics;

/// Most updates (or ids) in one batched call.
const MAX_BATCH: usize = 400;
/// Batched loads running at once.
const LOAD_CONCURRENCY: usize = 3;

/// What one caller's write-back did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteOutcome {
    /// Ids whose update is durable (applied, or the store already held it or
    /// newer); the others are unknown, unreadable, or contradict the store.
    pub durable: Vec<TaskId>,
    /// (task id, why) of the updates that contradict what the store holds.
    pub conflicts: Vec<(TaskId, String)>,
    pub unknown: Vec<TaskId>,
}

type Loaded = Vec<Result<LocalTask, RowError>>;
type WriteReply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

enum WriteOp {
    WriteBack {
        updates: Vec<PortalTask>,
        reply: WriteReply,
    },
    Release {
        ids: Vec<TaskId>,
        job_id: String,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

struct LoadOp {
    ids: Vec<TaskId>,
    reply: oneshot::Sender<Result<Loaded, StoreError>>,
}

/// Handle on the batching loops; cheap to clone. The loops end when the
/// last handle is dropped.
#[derive(Clone, Debug)]
pub struct StoreBatcher {
    store: AnyStore,
    writes: mpsc::UnboundedSender<WriteOp>,
    loads: mpsc::UnboundedSender<LoadOp>,
}

/// A batched store call that failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batching loop is gone: the runtime is shutting down.
    #[error("the store batcher has stopped (shutting down)")]
    Stopped,
}

fn gone<T>(_: T) -> BatchError {
    BatchError::Stopped
}

impl StoreBatcher {
    /// Starts the loops on the current tokio runtime.
    pub fn start(store: AnyStore, metrics: Metrics) -> StoreBatcher {
        let (writes, write_rx) = mpsc::unbounded_channel();
        let (loads, load_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store.clone(), metrics, write_rx));
        tokio::spawn(load_loop(store.clone(), load_rx));
        StoreBatcher {
            store,
            writes,
            loads,
        }
    }

    /// The store itself, for calls that are not batched.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Writes `updates` back; answers once they are committed.
    pub async fn write_back(&self, updates: Vec<PortalTask>) -> Result<WriteOutcome, BatchError> {
        if updates.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(WriteOp::WriteBack { updates, reply })
            .map_err(gone)?;
        Ok(rx.await.map_err(gone)??)
    }

    /// Releases `job_id`'s leases on `ids`.
    pub async fn release(&self, ids: Vec<TaskId>, job_id: String) -> Result<u64, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(WriteOp::Release { ids, job_id, reply })
            .map_err(gone)?;
        Ok(rx.await.map_err(gone)??)
    }

    /// Loads `ids`, one answer per id in order (as [`TaskStore::load`]).
    pub async fn load(&self, ids: Vec<TaskId>) -> Result<Loaded, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.loads.send(LoadOp { ids, reply }).map_err(gone)?;
        Ok(rx.await.map_err(gone)??)
    }
}

fn count(metrics: &Metrics, report: &WriteBackReport) {
    metrics.written_back("applied", report.applied);
    metrics.written_back("repeated", report.repeated);
    metrics.written_back("stale", report.stale);
    metrics.written_back("backwards", report.backwards);
    metrics.written_back("conflict", report.conflicts.len() as u64);
    metrics.written_back("unknown", report.unknown.len() as u64);
    metrics.written_back("bad_row", report.bad_rows.len() as u64);
    metrics.stale_ignored(report.stale + report.backwards);
}

/// One caller's share of a (possibly batched) report.
fn outcome_for(updates: &[PortalTask], report: &WriteBackReport) -> WriteOutcome {
    let mine: HashSet<&str> = updates.iter().map(|u| u.host_system_id.as_str()).collect();
    let conflicts: Vec<(TaskId, String)> = report
        .conflicts
        .iter()
        .filter(|(id, _)| mine.contains(id.as_str()))
        .cloned()
        .collect();
    let unknown: Vec<TaskId> = report
        .unknown
        .iter()
        .filter(|id| mine.contains(id.as_str()))
        .cloned()
        .collect();
    let refused: HashSet<&str> = conflicts
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(unknown.iter().map(String::as_str))
        .chain(report.bad_rows.iter().map(RowError::task_id))
        .collect();
    let durable = updates
        .iter()
        .map(|u| &u.host_system_id)
        .filter(|id| !refused.contains(id.as_str()))
        .cloned()
        .collect();
    WriteOutcome {
        durable,
        conflicts,
        unknown,
    }
}

async fn write_loop(store: AnyStore, metrics: Metrics, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    while let Some(first) = rx.recv().await {
        let mut batch: Vec<(Vec<PortalTask>, WriteReply)> = Vec::new();
        let mut size = 0;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                WriteOp::WriteBack { updates, reply } => {
                    size += updates.len();
                    batch.push((updates, reply));
                }
                // A release waits for nothing: do it now, between batches.
                WriteOp::Release { ids, job_id, reply } => {
                    let _ = reply.send(store.release(&ids, &job_id).await);
                }
            }
            if size < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        if batch.len() == 1 {
            let (updates, reply) = batch.remove(0);
            let result = store.write_back(&updates).await.map(|report| {
                count(&metrics, &report);
                outcome_for(&updates, &report)
            });
            let _ = reply.send(result);
            continue;
        }
        let all: Vec<PortalTask> = batch.iter().flat_map(|(u, _)| u.iter().cloned()).collect();
        match store.write_back(&all).await {
            Ok(report) => {
                count(&metrics, &report);
                for (updates, reply) in batch {
                    let _ = reply.send(Ok(outcome_for(&updates, &report)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, callers = batch.len(), "batched write-back failed; writing each part alone");
                for (updates, reply) in batch {
                    let result = store.write_back(&updates).await.map(|report| {
                        count(&metrics, &report);
                        outcome_for(&updates, &report)
                    });
                    let _ = reply.send(result);
                }
            }
        }
    }
}

async fn load_loop(store: AnyStore, mut rx: mpsc::UnboundedReceiver<LoadOp>) {
    let permits = Arc::new(Semaphore::new(LOAD_CONCURRENCY));
    while let Some(first) = rx.recv().await {
        // Wait for a slot first: callers arriving meanwhile join this batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut size = batch[0].ids.len();
        while size < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    size += op.ids.len();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if batch.len() == 1 {
                let op = batch.remove(0);
                let _ = op.reply.send(store.load(&op.ids).await);
                return;
            }
            let all: Vec<TaskId> = batch.iter().flat_map(|op| op.ids.iter().cloned()).collect();
            match store.load(&all).await {
                Ok(mut loaded) if loaded.len() == all.len() => {
                    for op in batch.into_iter().rev() {
                        let mine = loaded.split_off(loaded.len() - op.ids.len());
                        let _ = op.reply.send(Ok(mine));
                    }
                }
                _ => {
                    for op in batch {
                        let _ = op.reply.send(store.load(&op.ids).await);
                    }
                }
            }
        });
    }
}
