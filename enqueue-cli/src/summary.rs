//! The result of one enqueue run: what `--json` prints, what the human summary
//! says, and what `status` shows as the last run (kept in Redis).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How many ids of each kind the summary lists (the rest are counted only).
pub const FIRST_IDS: usize = 10;

/// Counts of one kind of job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Jobs pushed (or, in a dry run, that would be).
    pub jobs: u64,
    /// Tasks in those jobs.
    pub tasks: u64,
    /// Jobs the queue already held under the same idempotency key (not added).
    pub already_queued: u64,
    /// The first task ids, in store order.
    pub first_ids: Vec<String>,
}

impl KindCounts {
    pub fn add_job(&mut self, ids: &[String], new: bool) {
        if new {
            self.jobs += 1;
        } else {
            self.already_queued += 1;
        }
        self.tasks += ids.len() as u64;
        for id in ids {
            if self.first_ids.len() >= FIRST_IDS {
                break;
            }
            self.first_ids.push(id.clone());
        }
    }
}

/// Tasks not queued, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Failed validation; the error is recorded on the task.
    pub invalid: u64,
    /// Rows the host wrote badly (unreadable column, unknown status).
    pub bad_rows: u64,
    /// `--task` ids the store does not hold.
    pub unknown: u64,
    /// `--task` ids whose task is complete or cancelled: nothing to sync.
    pub finished: u64,
    /// Taken by another job between reading and leasing.
    pub leased_elsewhere: u64,
    /// Held back by `--max-pending`.
    pub backpressure: u64,
    /// Up to [`FIRST_IDS`] ids per reason, with the reason's detail.
    pub examples: BTreeMap<String, Vec<SkippedTask>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedTask {
    pub id: String,
    pub reason: String,
}

/// Why a task was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    Invalid,
    BadRow,
    Unknown,
    Finished,
    LeasedElsewhere,
    Backpressure,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Invalid => "invalid",
            SkipReason::BadRow => "bad_row",
            SkipReason::Unknown => "unknown",
            SkipReason::Finished => "finished",
            SkipReason::LeasedElsewhere => "leased_elsewhere",
            SkipReason::Backpressure => "backpressure",
        }
    }
}

impl Skipped {
    pub fn note(&mut self, reason: SkipReason, id: &str, detail: impl Into<String>) {
        let count = match reason {
            SkipReason::Invalid => &mut self.invalid,
            SkipReason::BadRow => &mut self.bad_rows,
            SkipReason::Unknown => &mut self.unknown,
            SkipReason::Finished => &mut self.finished,
            SkipReason::LeasedElsewhere => &mut self.leased_elsewhere,
            SkipReason::Backpressure => &mut self.backpressure,
        };
        *count += 1;
        let examples = self
            .examples
            .entry(reason.as_str().to_string())
            .or_default();
        if examples.len() < FIRST_IDS {
            examples.push(SkippedTask {
                id: id.to_string(),
                reason: detail.into(),
            });
        }
    }

    /// Skipped tasks that make a run "partial" (exit 1). Tasks leased by
    /// another job are not: their work is queued.
    pub fn needs_attention(&self) -> u64 {
        self.invalid + self.bad_rows + self.unknown + self.backpressure
    }
}

/// What `--max-pending` saw and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backpressure {
    pub max_pending: u64,
    /// Pending jobs on the queue when the run started.
    pub pending_before: u64,
    /// True when the limit stopped the run before it queued everything.
    pub held_back: bool,
}

/// The summary of one `portal-sync enqueue` run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnqueueSummary {
    pub run_id: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: u64,
    pub dry_run: bool,
    /// `done` or `partial` (the exit code says the same).
    pub outcome: String,
    pub exit_code: u8,
    /// Per job kind: `submit`, `refresh`, `pull`.
    pub kinds: BTreeMap<String, KindCounts>,
    pub skipped: Skipped,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backpressure: Option<Backpressure>,
    /// Settings that shaped the run.
    pub task_package_size: usize,
}

impl EnqueueSummary {
    /// Jobs pushed in all kinds.
    pub fn jobs(&self) -> u64 {
        self.kinds.values().map(|k| k.jobs).sum()
    }

    /// A few lines for a person on a terminal (or a cron mail).
    pub fn human(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would queue"
        } else {
            "queued"
        };
        let _ = writeln!(
            out,
            "enqueue run {} {}: {verb} {} job(s) in {}",
            self.run_id,
            self.outcome,
            self.jobs(),
            crate::output::human_duration(std::time::Duration::from_millis(self.duration_ms))
        );
        for (kind, k) in &self.kinds {
            let _ = write!(
                out,
                "  {kind:<8} {:>7} job(s), {:>8} task(s)",
                k.jobs, k.tasks
            );
            if k.already_queued > 0 {
                let _ = write!(out, ", {} already queued", k.already_queued);
            }
            if !k.first_ids.is_empty() {
                let _ = write!(out, "  first: {}", k.first_ids.join(", "));
            }
            out.push('\n');
        }
        let s = &self.skipped;
        let reasons = [
            ("invalid (error recorded on the task)", s.invalid),
            ("unreadable rows", s.bad_rows),
            ("unknown --task ids", s.unknown),
            ("complete or cancelled", s.finished),
            ("leased by another job", s.leased_elsewhere),
            ("held back by --max-pending", s.backpressure),
        ];
        for (what, n) in reasons {
            if n > 0 {
                let _ = writeln!(out, "  skipped {n:>7} {what}");
            }
        }
        for examples in s.examples.values() {
            for e in examples {
                let _ = writeln!(out, "    {}: {}", e.id, e.reason);
            }
        }
        if let Some(bp) = &self.backpressure
            && bp.held_back
        {
            let _ = writeln!(
                out,
                "  backpressure: the queue held {} pending job(s), limit {}; the rest waits for the next run",
                bp.pending_before, bp.max_pending
            );
        }
        out
    }
}
