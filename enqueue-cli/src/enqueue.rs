//! `portal-sync enqueue`: decide what needs syncing and queue it.
//!
//! The run is a small pipeline, so memory stays flat whatever the number of
//! tasks:
//!
//! ```text
//! store.stream_due ─► validate ─► package (≤ task_package_size) ─► channel ─► lease in store ─► push_bulk
//!   (pages of rows)    (invalid: error        (submit / refresh)    (bounded)   (a batch per         (idempotency key
//!                       recorded, counted)                                      transaction; job id   per package)
//!                                                                               = queue job id)
//! ```
//!
//! Why it cannot double-enqueue:
//! - a task is leased in the store *before* its job is pushed, and the stream
//!   leaves out tasks under a live lease, so a second run while the first
//!   run's jobs are pending finds nothing to do;
//! - each job is pushed with a deterministic idempotency key
//!   ([`SyncJob::idempotency_key`], a digest of its task ids), so a run that
//!   re-forms a package whose job is still queued (its lease lapsed, or an
//!   earlier run died between push and exit) adds nothing; the tasks are then
//!   re-leased to the job already queued;
//! - the lease's job id is the queue's job id, so the worker can release the
//!   leases of the job it ran.
//!
//! Why it loses nothing when Redis fails: a batch whose push fails has its
//! leases released before the run exits (code 3), so the next run takes the
//! same tasks again. Jobs of earlier batches were acknowledged by Redis; if
//! Redis then loses them, their leases lapse and the tasks come back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use job_queue::{JobQueue, NewJob, PushOptions};
use task_model::job::{JobKind, PullPage, SyncJob};
use task_model::store::{AnyStore, DueQuery, LeaseRequest, RowError, StoreError, TaskStore};
use task_model::{LocalStatus, LocalTask, TaskId, validate_task};
use tokio::sync::mpsc;

use crate::cli::EnqueueArgs;
use crate::exit::{CommandError, ExitStatus};
use crate::summary::{Backpressure, EnqueueSummary, KindCounts, SkipReason, Skipped};

/// Packages handed from the reader to the leaser at most at once.
const BATCH_PACKAGES: usize = 250;
/// Packages the reader may run ahead of the leaser.
const CHANNEL_PACKAGES: usize = 2 * BATCH_PACKAGES;
/// Tasks handed from the store reader to the validator at once, and chunks
/// in flight between them.
const TASK_CHUNK: usize = 50;
const TASK_CHUNKS_IN_FLIGHT: usize = 2;
/// `--task` ids loaded from the store per call.
const NAMED_TASKS_CHUNK: usize = 500;

/// What a run works with, already opened.
#[derive(Clone, Debug)]
pub struct EnqueueContext {
    pub store: AnyStore,
    /// For messages (password removed).
    pub store_url: String,
    /// `None` only for a dry run, which never touches Redis.
    pub queue: Option<JobQueue>,
    pub task_package_size: usize,
    /// How long a task stays leased to its job. A job that is lost with its
    /// Redis data has its tasks queued again after this.
    pub lease_for: Duration,
}

/// Told about progress; draws the progress bar, and lets tests act at a
/// chosen point of a run (e.g. stop Redis after the first batch).
pub trait RunObserver: Send + Sync {
    /// Tasks read from the store so far went up by `n`.
    fn tasks_read(&self, _n: u64) {}
    /// A batch of `jobs` jobs holding `tasks` tasks was pushed (or counted, in
    /// a dry run).
    fn batch_pushed(&self, _jobs: u64, _tasks: u64) {}
}

/// An observer that does nothing.
#[derive(Debug)]
pub struct NoObserver;
impl RunObserver for NoObserver {}

/// One package on its way from the reader to the leaser.
#[derive(Debug)]
struct Package {
    kind: JobKind,
    ids: Vec<TaskId>,
}

/// Builds packages of at most `size` ids per kind.
#[derive(Debug)]
struct Packager {
    size: usize,
    submit: Vec<TaskId>,
    refresh: Vec<TaskId>,
}

impl Packager {
    fn new(size: usize) -> Packager {
        Packager {
            size: size.max(1),
            submit: Vec::new(),
            refresh: Vec::new(),
        }
    }

    /// Adds an id; answers a full package when there is one.
    fn add(&mut self, kind: JobKind, id: TaskId) -> Option<Package> {
        let open = match kind {
            JobKind::Refresh => &mut self.refresh,
            _ => &mut self.submit,
        };
        open.push(id);
        if open.len() >= self.size {
            let ids = std::mem::take(open);
            Some(Package { kind, ids })
        } else {
            None
        }
    }

    /// The packages not yet full.
    fn finish(self) -> impl Iterator<Item = Package> {
        [
            (JobKind::Submit, self.submit),
            (JobKind::Refresh, self.refresh),
        ]
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(kind, ids)| Package { kind, ids })
    }
}

/// Runs `enqueue` with an opened context. The caller holds the run lock.
pub async fn run_enqueue(
    ctx: &EnqueueContext,
    args: &EnqueueArgs,
    run_id: &str,
    observer: &dyn RunObserver,
) -> Result<EnqueueSummary, CommandError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let mut run = Run {
        ctx,
        args,
        run_id,
        observer,
        kinds: JobKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), KindCounts::default()))
            .collect(),
        skipped: Skipped::default(),
        budget: None,
        backpressure: None,
    };

    if let (Some(max), Some(queue)) = (args.max_pending, &ctx.queue) {
        let counts = queue
            .counts()
            .await
            .map_err(|e| queue_error("reading queue counts", e))?;
        run.budget = Some(max.saturating_sub(counts.pending));
        run.backpressure = Some(Backpressure {
            max_pending: max,
            pending_before: counts.pending,
            held_back: false,
        });
    }

    if args.tasks.is_empty() {
        run.push_pull_if_needed().await?;
        run.stream_and_queue().await?;
    } else {
        run.queue_named_tasks().await?;
    }

    let partial =
        run.skipped.needs_attention() > 0 || run.backpressure.as_ref().is_some_and(|b| b.held_back);
    let status = ExitStatus::done_or_partial(partial);
    Ok(EnqueueSummary {
        run_id: run_id.to_string(),
        started_at,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        dry_run: args.dry_run,
        outcome: if partial { "partial" } else { "done" }.to_string(),
        exit_code: status.code(),
        kinds: run.kinds,
        skipped: run.skipped,
        backpressure: run.backpressure,
        task_package_size: ctx.task_package_size,
    })
}

fn queue_error(action: &'static str, e: job_queue::QueueError) -> CommandError {
    CommandError::Queue { action, source: e }
}

/// The state of one run.
struct Run<'a> {
    ctx: &'a EnqueueContext,
    args: &'a EnqueueArgs,
    run_id: &'a str,
    observer: &'a dyn RunObserver,
    kinds: BTreeMap<String, KindCounts>,
    skipped: Skipped,
    /// New jobs this run may still push (`--max-pending`).
    budget: Option<u64>,
    backpressure: Option<Backpressure>,
}

impl Run<'_> {
    fn kind(&mut self, kind: JobKind) -> &mut KindCounts {
        self.kinds.entry(kind.as_str().to_string()).or_default()
    }

    fn store_error(&self, e: StoreError) -> CommandError {
        CommandError::store(&self.ctx.store_url, e)
    }

    /// Takes `n` jobs from the budget; answers how many may be pushed.
    fn take_budget(&mut self, n: usize) -> usize {
        match &mut self.budget {
            None => n,
            Some(left) => {
                let allowed = n.min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= allowed as u64;
                if allowed < n
                    && let Some(bp) = &mut self.backpressure
                {
                    bp.held_back = true;
                }
                allowed
            }
        }
    }

    fn budget_exhausted(&self) -> bool {
        self.budget == Some(0)
    }

    /// One pull job (a page of unacknowledged changes from offset 0) when any
    /// task awaits completion. Its idempotency key keeps it single while queued.
    async fn push_pull_if_needed(&mut self) -> Result<(), CommandError> {
        let counts = self
            .ctx
            .store
            .counts(Utc::now())
            .await
            .map_err(|e| self.store_error(e))?;
        let awaiting = counts
            .by_status
            .get(&LocalStatus::AwaitingCompletion)
            .copied()
            .unwrap_or(0);
        if awaiting == 0 {
            return Ok(());
        }
        let page = PullPage {
            offset: 0,
            limit: u32::try_from(self.ctx.task_package_size).unwrap_or(u32::MAX),
        };
        let job = SyncJob::pull(self.run_id, page).map_err(|e| CommandError::Usage {
            message: format!("cannot build the pull job: {e}"),
        })?;
        if self.args.dry_run {
            self.kind(JobKind::Pull).add_job(&[], true);
            return Ok(());
        }
        if self.take_budget(1) == 0 {
            self.skipped
                .note(SkipReason::Backpressure, "(pull)", "pull job held back");
            return Ok(());
        }
        let Some(queue) = &self.ctx.queue else {
            return Ok(());
        };
        let options = PushOptions::with_idempotency_key(job.idempotency_key());
        let outcome = queue
            .push(&job, options)
            .await
            .map_err(|e| queue_error("pushing the pull job", e))?;
        if !outcome.new
            && let Some(left) = &mut self.budget
        {
            *left += 1;
        }
        self.kind(JobKind::Pull).add_job(&[], outcome.new);
        self.observer.batch_pushed(u64::from(outcome.new), 0);
        Ok(())
    }

    /// The normal run: stream due tasks, package them, lease and push.
    async fn stream_and_queue(&mut self) -> Result<(), CommandError> {
        if self.budget_exhausted() {
            if let Some(bp) = &mut self.backpressure {
                bp.held_back = true;
            }
            return Ok(());
        }
        let mut statuses = vec![LocalStatus::AwaitingSubmission];
        if self.args.complete {
            statuses.push(LocalStatus::AwaitingCompletion);
        }
        // Pages of the store's default size; the tasks of a page share their
        // parsed documents, so a page costs a few hundred bytes per task.
        let query = DueQuery::new(statuses, Utc::now());
        let stream = self.ctx.store.stream_due(query);
        let (task_tx, task_rx) = mpsc::channel::<Vec<LocalTask>>(TASK_CHUNKS_IN_FLIGHT);
        let (tx, mut rx) = mpsc::channel::<Package>(CHANNEL_PACKAGES);
        // Three stages on the runtime's threads: reading (and decoding) rows,
        // validating and packaging, and leasing and pushing, so that decoding
        // and validation use both cores while the leaser waits on the store
        // and Redis.
        let observer_counts = ReadCounter::default();
        let reader_task = {
            let counter = observer_counts.clone();
            tokio::spawn(read_tasks(stream, task_tx, counter))
        };
        let packager = Packaging {
            store: self.ctx.store.clone(),
            package_size: self.ctx.task_package_size,
            dry_run: self.args.dry_run,
        };
        let packager_task = tokio::spawn(packager.run(task_rx, tx));

        let mut batch = Vec::with_capacity(BATCH_PACKAGES);
        let mut result = Ok(());
        let mut last_read = 0;
        loop {
            batch.clear();
            if rx.recv_many(&mut batch, BATCH_PACKAGES).await == 0 {
                break;
            }
            let read = observer_counts.get();
            self.observer.tasks_read(read - last_read);
            last_read = read;
            if let Err(e) = self.queue_batch(std::mem::take(&mut batch)).await {
                result = Err(e);
                break;
            }
            if self.budget_exhausted() {
                break;
            }
        }
        // Stop the reader (if we stopped early) and collect what it skipped.
        // Packages it already handed over but that the budget left out are
        // counted as held back.
        rx.close();
        if result.is_ok() && self.budget_exhausted() {
            while let Some(held) = rx.recv().await {
                if let Some(bp) = &mut self.backpressure {
                    bp.held_back = true;
                }
                for id in &held.ids {
                    self.skipped.note(
                        SkipReason::Backpressure,
                        id,
                        "held back by --max-pending; queued by a later run",
                    );
                }
            }
        }
        drop(rx);
        let joined = |e: tokio::task::JoinError| CommandError::Usage {
            message: format!("the store reader stopped: {e}"),
        };
        let read_outcome = reader_task.await.map_err(joined)?;
        let pack_outcome = packager_task.await.map_err(joined)?;
        let (skipped, stopped_early) = match (read_outcome, pack_outcome) {
            (Ok(read_skipped), Ok((mut skipped, stopped_early))) => {
                merge_skipped(&mut skipped, read_skipped);
                (skipped, stopped_early)
            }
            (Err(e), _) | (_, Err(e)) => {
                result?;
                return Err(self.store_error(e));
            }
        };
        merge_skipped(&mut self.skipped, skipped);
        result?;
        if stopped_early
            && self.budget_exhausted()
            && let Some(bp) = &mut self.backpressure
        {
            bp.held_back = true;
        }
        self.observer.tasks_read(observer_counts.get() - last_read);
        Ok(())
    }

    /// `--task ID…`: these tasks only, leased whatever their current lease.
    async fn queue_named_tasks(&mut self) -> Result<(), CommandError> {
        let mut ids = self.args.tasks.clone();
        ids.sort();
        ids.dedup();
        let mut packager = Packager::new(self.ctx.task_package_size);
        let mut packages = Vec::new();
        for chunk in ids.chunks(NAMED_TASKS_CHUNK) {
            let loaded = self
                .ctx
                .store
                .load(chunk)
                .await
                .map_err(|e| self.store_error(e))?;
            for item in loaded {
                match item {
                    Ok(task) => {
                        let kind =
                            classify(&self.ctx.store, &task, self.args.dry_run, &mut self.skipped)
                                .await
                                .map_err(|e| self.store_error(e))?;
                        if let Some(kind) = kind {
                            packages.extend(packager.add(kind, task.task.host_system_id));
                        }
                    }
                    Err(RowError::Missing { task_id }) => {
                        self.skipped
                            .note(SkipReason::Unknown, &task_id, "not in the store");
                    }
                    Err(e @ RowError::BadColumn { .. }) => {
                        self.skipped
                            .note(SkipReason::BadRow, e.task_id(), e.to_string());
                    }
                }
            }
        }
        packages.extend(packager.finish());
        self.observer.tasks_read(ids.len() as u64);
        while !packages.is_empty() {
            let rest = packages.split_off(packages.len().min(BATCH_PACKAGES));
            self.queue_batch_with(packages, true).await?;
            packages = rest;
        }
        Ok(())
    }

    async fn queue_batch(&mut self, packages: Vec<Package>) -> Result<(), CommandError> {
        self.queue_batch_with(packages, false).await
    }

    /// Leases each package under a fresh job id, then pushes the batch. If
    /// the push fails, the batch's leases are released before returning.
    async fn queue_batch_with(
        &mut self,
        mut packages: Vec<Package>,
        force: bool,
    ) -> Result<(), CommandError> {
        let allowed = self.take_budget(packages.len());
        for held in packages.drain(allowed..) {
            for id in &held.ids {
                self.skipped.note(
                    SkipReason::Backpressure,
                    id,
                    "held back by --max-pending; queued by a later run",
                );
            }
        }
        if packages.is_empty() {
            return Ok(());
        }
        if self.args.dry_run {
            let tasks: usize = packages.iter().map(|p| p.ids.len()).sum();
            for p in &packages {
                self.kind(p.kind).add_job(&p.ids, true);
            }
            self.observer
                .batch_pushed(packages.len() as u64, tasks as u64);
            return Ok(());
        }
        let Some(queue) = self.ctx.queue.clone() else {
            return Err(CommandError::Usage {
                message: "no queue to push to".into(),
            });
        };

        let now = Utc::now();
        let until = now
            + chrono::Duration::from_std(self.ctx.lease_for)
                .unwrap_or_else(|_| chrono::Duration::minutes(15));
        let store = &self.ctx.store;
        let mut requests = Vec::with_capacity(packages.len());
        for p in &packages {
            let mut request =
                LeaseRequest::new(p.ids.clone(), ulid::Ulid::new().to_string(), until, now);
            if force {
                request = request.forced();
            }
            requests.push(request);
        }
        // One transaction for the whole batch.
        let leases: Vec<(Package, String, Result<Vec<TaskId>, StoreError>)> =
            match store.lease_many(&requests).await {
                Ok(got) => packages
                    .into_iter()
                    .zip(requests)
                    .zip(got)
                    .map(|((p, r), ids)| (p, r.job_id, Ok(ids)))
                    .collect(),
                Err(e) => return Err(self.store_error(e)),
            };

        // (kind, job id, leased ids) of every lease taken, for push or release.
        let mut taken: Vec<(JobKind, String, Vec<TaskId>)> = Vec::with_capacity(leases.len());
        let mut failure = None;
        for (package, job_id, leased) in leases {
            match leased {
                Ok(ids) => {
                    if ids.len() < package.ids.len() {
                        for id in package.ids.iter().filter(|id| !ids.contains(id)) {
                            self.skipped.note(
                                SkipReason::LeasedElsewhere,
                                id,
                                "leased by another job meanwhile",
                            );
                        }
                    }
                    if !ids.is_empty() {
                        taken.push((package.kind, job_id, ids));
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            self.release_all(&taken).await;
            return Err(self.store_error(e));
        }

        let mut jobs = Vec::with_capacity(taken.len());
        for (kind, job_id, ids) in &taken {
            let job = match kind {
                JobKind::Refresh => SyncJob::refresh(self.run_id, ids.clone()),
                _ => SyncJob::submit(self.run_id, ids.clone()),
            };
            let job = match job {
                Ok(job) => job,
                Err(e) => {
                    self.release_all(&taken).await;
                    return Err(CommandError::Usage {
                        message: format!("cannot build a job: {e}"),
                    });
                }
            };
            let options = PushOptions {
                id: Some(job_id.clone()),
                idempotency_key: Some(job.idempotency_key()),
                ..PushOptions::default()
            };
            jobs.push(NewJob { job, options });
        }
        let outcomes = match queue.push_bulk(jobs).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.release_all(&taken).await;
                return Err(queue_error("pushing jobs", e));
            }
        };

        let mut new_jobs = 0;
        let mut tasks = 0;
        for ((kind, job_id, ids), outcome) in taken.iter().zip(outcomes) {
            if !outcome.new {
                // The same package is already queued (an earlier run whose
                // leases lapsed, or that died after pushing): hand the tasks'
                // leases to that job, so its worker releases them.
                if outcome.id != *job_id {
                    let request =
                        LeaseRequest::new(ids.clone(), outcome.id.clone(), until, now).forced();
                    if let Err(e) = store.lease(request).await {
                        tracing::warn!(job_id = %outcome.id, error = %e, "could not move leases to the queued job; they lapse on their own");
                    }
                }
                if let Some(left) = &mut self.budget {
                    *left += 1;
                }
            } else {
                new_jobs += 1;
                tasks += ids.len() as u64;
            }
            self.kind(*kind).add_job(ids, outcome.new);
        }
        tracing::debug!(jobs = new_jobs, tasks, "pushed a batch");
        self.observer.batch_pushed(new_jobs, tasks);
        Ok(())
    }

    /// Releases the leases of a batch that was not pushed.
    async fn release_all(&self, taken: &[(JobKind, String, Vec<TaskId>)]) {
        let mut released = 0;
        for (_, job_id, ids) in taken {
            match self.ctx.store.release(ids, job_id).await {
                Ok(n) => released += n,
                Err(e) => tracing::error!(
                    job_id = %job_id,
                    error = %e,
                    "could not release leases; the tasks are due again when the lease lapses"
                ),
            }
        }
        tracing::warn!(
            released,
            "released the leases of a batch that was not pushed"
        );
    }
}

fn merge_skipped(into: &mut Skipped, from: Skipped) {
    into.invalid += from.invalid;
    into.bad_rows += from.bad_rows;
    into.unknown += from.unknown;
    into.finished += from.finished;
    into.leased_elsewhere += from.leased_elsewhere;
    into.backpressure += from.backpressure;
    for (reason, examples) in from.examples {
        let into_examples = into.examples.entry(reason).or_default();
        for e in examples {
            if into_examples.len() < crate::summary::FIRST_IDS {
                into_examples.push(e);
            }
        }
    }
}

/// Decides what a task needs: a submit (if valid), a refresh, or nothing.
/// An invalid task gets the error recorded on it, unless the same error is
/// already there (so a run every minute does not inflate its attempt count).
async fn classify(
    store: &AnyStore,
    task: &LocalTask,
    dry_run: bool,
    skipped: &mut Skipped,
) -> Result<Option<JobKind>, StoreError> {
    match task.status {
        LocalStatus::AwaitingSubmission => match validate_task(&task.task) {
            Ok(()) => Ok(Some(JobKind::Submit)),
            Err(errors) => {
                let message = errors.to_string();
                let already = task.error.as_ref().is_some_and(|e| e.message == message);
                if !dry_run && !already {
                    store.record_error(task.id(), &message).await?;
                }
                skipped.note(SkipReason::Invalid, task.id(), message);
                Ok(None)
            }
        },
        LocalStatus::AwaitingCompletion => Ok(Some(JobKind::Refresh)),
        LocalStatus::Complete | LocalStatus::Cancelled => {
            skipped.note(
                SkipReason::Finished,
                task.id(),
                format!("already {}", task.status),
            );
            Ok(None)
        }
    }
}

/// Tasks read so far, shared between the reader and the leaser.
#[derive(Clone, Debug, Default)]
struct ReadCounter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl ReadCounter {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// First stage: reads rows into chunks of tasks. Rows the host wrote badly
/// are reported and skipped here. Stops quietly when the next stage hangs up.
async fn read_tasks(
    mut stream: futures::stream::BoxStream<'static, Result<LocalTask, StoreError>>,
    tx: mpsc::Sender<Vec<LocalTask>>,
    counter: ReadCounter,
) -> Result<Skipped, StoreError> {
    let mut skipped = Skipped::default();
    let mut chunk = Vec::with_capacity(TASK_CHUNK);
    while let Some(item) = stream.next().await {
        counter.add(1);
        match item {
            Ok(task) => chunk.push(task),
            Err(StoreError::BadRow(row)) => {
                tracing::warn!(task_id = %row.task_id(), error = %row, "skipping a task whose row cannot be read");
                skipped.note(SkipReason::BadRow, row.task_id(), row.to_string());
            }
            Err(e) => return Err(e),
        }
        if chunk.len() >= TASK_CHUNK
            && tx
                .send(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(TASK_CHUNK),
                ))
                .await
                .is_err()
        {
            return Ok(skipped);
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(chunk).await;
    }
    Ok(skipped)
}

/// Second stage: validates and packages.
struct Packaging {
    store: AnyStore,
    package_size: usize,
    dry_run: bool,
}

impl Packaging {
    /// Answers what it skipped, and whether it stopped early because the
    /// leaser hung up.
    async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<LocalTask>>,
        tx: mpsc::Sender<Package>,
    ) -> Result<(Skipped, bool), StoreError> {
        let mut skipped = Skipped::default();
        let mut packager = Packager::new(self.package_size);
        while let Some(chunk) = rx.recv().await {
            for task in chunk {
                let Some(kind) = classify(&self.store, &task, self.dry_run, &mut skipped).await?
                else {
                    continue;
                };
                if let Some(package) = packager.add(kind, task.task.host_system_id)
                    && tx.send(package).await.is_err()
                {
                    return Ok((skipped, true));
                }
            }
        }
        for package in packager.finish() {
            if tx.send(package).await.is_err() {
                return Ok((skipped, true));
            }
        }
        Ok((skipped, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packager_cuts_full_packages_per_kind() {
        let mut p = Packager::new(2);
        assert!(p.add(JobKind::Submit, "a".into()).is_none());
        assert!(p.add(JobKind::Refresh, "x".into()).is_none());
        let full = p.add(JobKind::Submit, "b".into()).expect("full");
        assert_eq!(full.kind, JobKind::Submit);
        assert_eq!(full.ids, vec!["a".to_string(), "b".to_string()]);
        assert!(p.add(JobKind::Submit, "c".into()).is_none());
        let rest: Vec<_> = p.finish().map(|p| (p.kind, p.ids)).collect();
        assert_eq!(
            rest,
            vec![
                (JobKind::Submit, vec!["c".to_string()]),
                (JobKind::Refresh, vec!["x".to_string()])
            ]
        );
    }
}
