//! The optional background "patients": at a given rate, they pick waiting
//! tasks in code order, start a given fraction of them and complete what
//! they started, as real users would, for demos and load runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::store::{PatientAction, task_code};
use super::{Shared, lock};

/// How the background patients behave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientsMode {
    /// Patient actions (a start or a completion) per second.
    pub rate_per_sec: f64,
    /// Share of waiting tasks that get started (the rest are left waiting).
    #[serde(default = "one")]
    pub fraction: f64,
}

fn one() -> f64 {
    1.0
}

impl PatientsMode {
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(self.rate_per_sec > 0.0 && self.rate_per_sec.is_finite()) {
            return Err(format!(
                "rate_per_sec {} must be positive",
                self.rate_per_sec
            ));
        }
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(format!("fraction {} is not within 0..=1", self.fraction));
        }
        Ok(())
    }
}

const TICK: Duration = Duration::from_millis(50);

pub(crate) async fn run(shared: Arc<Shared>, mode: PatientsMode) {
    let stop = shared.shutdown.clone();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = mode.rate_per_sec * TICK.as_secs_f64();
    let mut budget = 0.0;
    let mut cursor = 0u64;
    let mut started: VecDeque<(u64, serde_json::Value)> = VecDeque::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = super::stopped(stop.clone()) => return,
        }
        budget += per_tick;
        let mut store = lock(&shared.store);
        let mut rng = lock(&shared.rng);
        while budget >= 1.0 {
            // Finish what was started before starting more.
            if let Some((seq, instrument)) = started.pop_front() {
                budget -= 1.0;
                let assessment = json!({ "instrument": instrument, "values": {} });
                let _ = store.patient_action(&task_code(seq), PatientAction::Complete(assessment));
                continue;
            }
            let next = store.waiting_after(cursor, 64);
            if next.is_empty() {
                break;
            }
            for (seq, instrument) in next {
                cursor = seq;
                if rng.random_bool(mode.fraction) {
                    budget -= 1.0;
                    if store
                        .patient_action(&task_code(seq), PatientAction::Start)
                        .is_ok()
                    {
                        started.push_back((seq, instrument));
                    }
                    if budget < 1.0 {
                        break;
                    }
                }
            }
        }
        budget = budget.min(per_tick.max(1.0) * 4.0);
    }
}
