//! What a demo run reports: the numbers, the checks the run holds itself to,
//! and the table people read (the JSON object is the same data).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One rejected task and why, as the store recorded it.
#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    pub task_id: String,
    /// What the sample generator broke on purpose.
    pub defect: String,
    /// The error the store holds for the task.
    pub reason: String,
}

/// One check the run must pass for exit code 0.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The portal simulator's own counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PortalCounts {
    pub tasks_total: u64,
    pub tasks_by_status: BTreeMap<String, u64>,
    pub packages_accepted: u64,
    pub packages_rejected: u64,
    /// Submissions of a host id the portal already had (recognised and
    /// treated as submitted; they create nothing).
    pub duplicate_submissions: u64,
    pub stale_acknowledgements: u64,
}

/// The task store's own counts at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreCounts {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub with_error: u64,
}

/// The queue's counts at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueTotals {
    pub pending: u64,
    pub scheduled: u64,
    pub running: u64,
    pub done: u64,
    pub dead: u64,
}

/// The demo's summary (`--json` prints it as one object).
#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    /// `ok` when every check passed, else `failed`.
    pub outcome: &'static str,
    pub exit_code: u8,
    pub dir: String,
    pub store_url: String,
    pub redis: String,
    /// `env`, `settings` or `private`.
    pub redis_origin: &'static str,
    pub portal_url: String,
    pub workers: usize,
    /// HTTP endpoints of the workers (`/metrics`, `/healthz`, `/readyz`).
    pub worker_urls: Vec<String>,
    pub tasks: u64,
    pub valid: u64,
    pub invalid: u64,
    /// Valid tasks the store holds as submitted (awaiting completion or
    /// further), each found on the portal under the same code.
    pub submitted: u64,
    pub rejected: Vec<Rejected>,
    /// Tasks complete on the portal.
    pub completed_on_portal: u64,
    /// Tasks the store holds as complete, with the portal's state.
    pub completed_written_back: u64,
    /// Tasks started but not finished on the portal when the patients stopped.
    pub in_progress_on_portal: u64,
    /// Portal tasks beyond one per host id.
    pub duplicates_on_portal: u64,
    /// Tasks whose store state and portal state disagree (first few ids).
    pub mismatched: Vec<String>,
    pub enqueue_runs: u64,
    pub wall_time_ms: u64,
    /// From the first enqueue run to the last valid task submitted.
    pub submit_time_ms: u64,
    /// Valid tasks submitted per second of `submit_time_ms`.
    pub tasks_per_sec: f64,
    pub portal: PortalCounts,
    pub store: StoreCounts,
    pub queue: QueueTotals,
    pub checks: Vec<Check>,
}

impl DemoSummary {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The summary table for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let secs = self.wall_time_ms as f64 / 1000.0;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "portal-sync demo: {} tasks, {} workers, {}",
            self.tasks, self.workers, self.redis
        );
        let _ = writeln!(out);
        let row = |out: &mut String, label: &str, value: String| {
            let _ = writeln!(out, "  {label:<40} {value}");
        };
        row(&mut out, "tasks in the store", self.tasks.to_string());
        row(
            &mut out,
            "submitted to the portal",
            format!("{} of {} valid", self.submitted, self.valid),
        );
        row(
            &mut out,
            "rejected (invalid, not submitted)",
            self.rejected.len().to_string(),
        );
        for r in &self.rejected {
            let _ = writeln!(out, "    {}", r.reason);
        }
        row(
            &mut out,
            "completed by patients on the portal",
            self.completed_on_portal.to_string(),
        );
        row(
            &mut out,
            "completions written back to the store",
            self.completed_written_back.to_string(),
        );
        row(
            &mut out,
            "started, not finished (in progress)",
            self.in_progress_on_portal.to_string(),
        );
        row(
            &mut out,
            "duplicates on the portal",
            format!(
                "{} ({} resubmissions recognised)",
                self.duplicates_on_portal, self.portal.duplicate_submissions
            ),
        );
        row(&mut out, "enqueue runs", self.enqueue_runs.to_string());
        row(&mut out, "wall time", format!("{secs:.1} s"));
        row(
            &mut out,
            "submission throughput",
            format!(
                "{:.0} tasks/s ({} tasks in {:.1} s)",
                self.tasks_per_sec,
                self.submitted,
                self.submit_time_ms as f64 / 1000.0
            ),
        );
        let _ = writeln!(out);
        for check in &self.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  [{mark}] {}: {}", check.name, check.detail);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "  store and settings: {}", self.dir);
        out
    }
}
