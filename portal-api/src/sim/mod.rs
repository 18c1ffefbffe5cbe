//! The Patient Portal simulator (feature `sim`): an axum server with the
//! portal's endpoints over an in-memory store, fault injection, and a JSON
//! control API under `/_sim/` (no auth). Tests, benchmarks and the demo run
//! it in-process with [`Simulator::start`] and steer it with [`SimHandle`];
//! integrators run the `portal-sim` binary.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use portal_api::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::new("test-key")).await?;
//! println!("portal at {}", sim.url());
//! let stats = sim.handle().stats();
//! # drop(stats); sim.shutdown().await; Ok(()) }
//! ```
//!
//! Control API (JSON):
//! * `POST /_sim/reset`: forget all data and counters (faults stay).
//! * `GET /_sim/stats`: [`SimStats`].
//! * `GET|PUT|POST|DELETE /_sim/faults`: list, replace (array), add (one
//!   [`FaultRule`]), clear.
//! * `POST /_sim/tasks/{code}/start|save|complete|cancel` with
//!   `{"assessment": …}` for save and complete (default: an assessment of
//!   the task's instrument with no values); `GET /_sim/tasks/{code}`.
//! * `PUT|DELETE /_sim/patients`: start/stop the [`PatientsMode`].
//!
//! What it does not do: persist anything, or check RIOS documents beyond
//! [`BasicValidator`] (plug a fuller one in through [`TaskValidator`]).

mod control;
mod faults;
mod http;
mod patients;
mod store;
mod tls;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use task_model::PortalTask;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{ENDPOINTS, FaultKind, FaultRule};
pub use patients::PatientsMode;
pub use store::{PatientAction, Refusal, TaskView};
pub use tls::SimTls;
pub use validate::{BasicValidator, SubmittedTask, TaskValidator};

/// What to do with a task whose `host_system_id` the portal already holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// The real portal's behaviour: reject the package with
    /// `Specified host_system_id already exists…`.
    #[default]
    Reject,
    /// Accept a resubmission identical to the stored task (answering the
    /// stored task); still reject one that differs.
    IgnoreIdentical,
}

/// What a list's `count` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountMode {
    /// The size of this page (the documented contract).
    #[default]
    Page,
    /// The total number of matches, as some portals do (the client must not
    /// page by it). Applies to `GET /tasks`.
    Total,
}

/// Default maximum tasks per `POST /tasks` (413 beyond).
pub const DEFAULT_MAX_PACKAGE_SIZE: usize = 100;
/// Default maximum `limit` of a list.
pub const MAX_LIMIT: usize = 1000;

/// How to start a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// Accepted `X-Portal-API-Key` values (at least one).
    pub api_keys: Vec<SecretString>,
    /// Seeds the fault and patients randomness.
    pub seed: u64,
    pub duplicates: DuplicatePolicy,
    pub max_package_size: usize,
    pub count: CountMode,
    pub faults: Vec<FaultRule>,
    pub patients: Option<PatientsMode>,
    /// Serve HTTPS (optionally requiring client certificates).
    pub tls: Option<SimTls>,
    pub validator: Arc<dyn TaskValidator>,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("seed", &self.seed)
            .field("duplicates", &self.duplicates)
            .field("max_package_size", &self.max_package_size)
            .field("count", &self.count)
            .field("faults", &self.faults)
            .field("patients", &self.patients)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl SimConfig {
    /// A plain-HTTP simulator on a free local port accepting `api_key`.
    pub fn new(api_key: &str) -> SimConfig {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: vec![SecretString::from(api_key.to_owned())],
            seed: 0,
            duplicates: DuplicatePolicy::Reject,
            max_package_size: DEFAULT_MAX_PACKAGE_SIZE,
            count: CountMode::Page,
            faults: Vec::new(),
            patients: None,
            tls: None,
            validator: Arc::new(BasicValidator),
        }
    }
}

/// Failures of the simulator itself or of a control call.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("simulator: bad configuration: {0}")]
    Config(String),
    #[error("simulator: TLS setup: {0}")]
    Tls(String),
    #[error("simulator: {0}")]
    Refused(Refusal),
}

/// Counters served at `/_sim/stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Endpoint (as in [`ENDPOINTS`]) → status → requests. Requests refused
    /// for their API key count under their endpoint with 401.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Fault kind → times injected.
    pub faults_injected: BTreeMap<String, u64>,
    /// Portal status → tasks.
    pub tasks_by_status: BTreeMap<String, u64>,
    pub tasks_total: u64,
    pub packages_accepted: u64,
    pub packages_rejected: u64,
    /// Tasks submitted again with a `host_system_id` the portal had.
    pub duplicate_submissions: u64,
    /// Acknowledgements refused with 409 (the task had changed).
    pub stale_acknowledgements: u64,
}

impl SimStats {
    /// Requests to `endpoint` answered with `status`.
    pub fn requests_with(&self, endpoint: &str, status: u16) -> u64 {
        self.requests
            .get(endpoint)
            .and_then(|by| by.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// All requests to `endpoint`.
    pub fn requests_to(&self, endpoint: &str) -> u64 {
        self.requests
            .get(endpoint)
            .map(|by| by.values().sum())
            .unwrap_or(0)
    }
}

/// State shared by the routes, the control API and the handle.
pub(crate) struct Shared {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) faults: Mutex<faults::FaultPlan>,
    pub(crate) has_faults: std::sync::atomic::AtomicBool,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub(crate) faults_injected: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) api_keys: Vec<SecretString>,
    pub(crate) duplicates: DuplicatePolicy,
    pub(crate) max_package_size: usize,
    pub(crate) count: CountMode,
    pub(crate) validator: Arc<dyn TaskValidator>,
    pub(crate) patients: Mutex<Option<JoinHandle<()>>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Resolves once the simulator is told to stop.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Locks a mutex, recovering from a panicked holder (the data is counters
/// and maps that stay consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn key_ok(&self, given: &[u8]) -> bool {
        self.api_keys
            .iter()
            .any(|k| constant_time_eq(k.expose_secret().as_bytes(), given))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The way to start a simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds, spawns the server on the current tokio runtime, and returns
    /// once it accepts connections.
    pub async fn start(config: SimConfig) -> Result<RunningSim, SimError> {
        if config.api_keys.is_empty() {
            return Err(SimError::Config("at least one API key is required".into()));
        }
        if config.max_package_size == 0 {
            return Err(SimError::Config(
                "max package size must be at least 1".into(),
            ));
        }
        for rule in &config.faults {
            rule.check().map_err(SimError::Config)?;
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: config.listen,
            source,
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut plan = faults::FaultPlan::default();
        plan.replace(config.faults.clone());
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::default()),
            has_faults: (!plan.is_empty()).into(),
            faults: Mutex::new(plan),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            requests: Mutex::new(BTreeMap::new()),
            faults_injected: Mutex::new(BTreeMap::new()),
            api_keys: config.api_keys.clone(),
            duplicates: config.duplicates,
            max_package_size: config.max_package_size,
            count: config.count,
            validator: config.validator.clone(),
            patients: Mutex::new(None),
            shutdown: stop_rx.clone(),
        });
        let handle = SimHandle {
            shared: shared.clone(),
        };
        if let Some(mode) = config.patients.clone() {
            handle.set_patients(Some(mode)).map_err(SimError::Config)?;
        }
        let app = http::router(shared.clone());
        let scheme;
        let server = match &config.tls {
            None => {
                scheme = "http";
                tokio::spawn(http::serve_plain(listener, app, stop_rx))
            }
            Some(tls) => {
                scheme = "https";
                let acceptor = tls.acceptor()?;
                tokio::spawn(http::serve_tls(listener, acceptor, app, stop_rx))
            }
        };
        tracing::info!(%addr, scheme, "portal simulator listening");
        Ok(RunningSim {
            addr,
            url: format!("{scheme}://{addr}"),
            handle,
            stop: stop_tx,
            server: Some(server),
        })
    }
}

/// A started simulator. Dropping it stops the server (without waiting);
/// [`RunningSim::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct RunningSim {
    pub addr: SocketAddr,
    url: String,
    handle: SimHandle,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT` (or `https://…`): the client's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stops accepting, lets requests in flight finish (hanging ones are
    /// released), waits at most 5 s.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.handle.set_patients(None).ok();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Resolves when the server stops (for the binary: after a shutdown
    /// signal has been sent via [`RunningSim::stop_signal`]).
    pub async fn wait(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// A sender that stops the server when `true` is sent.
    pub fn stop_signal(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = lock(&self.handle.shared.patients).take() {
            h.abort();
        }
    }
}

/// The Rust control handle: the same operations as `/_sim/`. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Forgets all tasks, subjects, consents, studies and counters. Fault
    /// rules stay (clear them with [`SimHandle::clear_faults`]).
    pub fn reset(&self) {
        *lock(&self.shared.store) = store::Store::default();
        lock(&self.shared.requests).clear();
        lock(&self.shared.faults_injected).clear();
    }

    pub fn stats(&self) -> SimStats {
        let (counters, tasks_by_status, tasks_total) = {
            let store = lock(&self.shared.store);
            (
                store.counters,
                store.tasks_by_status(),
                store.task_count() as u64,
            )
        };
        let mut requests: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
        for ((endpoint, status), n) in lock(&self.shared.requests).iter() {
            requests
                .entry((*endpoint).to_owned())
                .or_default()
                .insert(*status, *n);
        }
        let faults_injected = lock(&self.shared.faults_injected)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        SimStats {
            requests,
            faults_injected,
            tasks_by_status,
            tasks_total,
            packages_accepted: counters.packages_accepted,
            packages_rejected: counters.packages_rejected,
            duplicate_submissions: counters.duplicate_submissions,
            stale_acknowledgements: counters.stale_acknowledgements,
        }
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        lock(&self.shared.faults).rules()
    }

    /// Replaces all fault rules.
    pub fn set_faults(&self, rules: Vec<FaultRule>) -> Result<(), String> {
        for r in &rules {
            r.check()?;
        }
        let mut plan = lock(&self.shared.faults);
        plan.replace(rules);
        self.shared
            .has_faults
            .store(!plan.is_empty(), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub fn add_fault(&self, rule: FaultRule) -> Result<(), String> {
        rule.check()?;
        let mut plan = lock(&self.shared.faults);
        plan.add(rule);
        self.shared
            .has_faults
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub fn clear_faults(&self) {
        let _ = self.set_faults(Vec::new());
    }

    /// A task as the portal holds it now.
    pub fn task(&self, code: &str) -> Option<PortalTask> {
        lock(&self.shared.store)
            .get_task(code)
            .map(|v| v.to_portal_task())
    }

    /// The portal's task for a host id.
    pub fn task_by_host_id(&self, host_system_id: &str) -> Option<PortalTask> {
        let query = crate::wire::TaskQuery::by_host_ids([host_system_id]);
        lock(&self.shared.store)
            .list_tasks(&query, 1, 0)
            .into_iter()
            .next()
            .map(|v| v.to_portal_task())
    }

    /// A patient-side change (bumps the revision, clears `acknowledged`).
    pub fn patient_action(
        &self,
        code: &str,
        action: PatientAction,
    ) -> Result<PortalTask, SimError> {
        lock(&self.shared.store)
            .patient_action(code, action)
            .map(|v| v.to_portal_task())
            .map_err(SimError::Refused)
    }

    pub fn start_task(&self, code: &str) -> Result<PortalTask, SimError> {
        self.patient_action(code, PatientAction::Start)
    }

    pub fn save_assessment(&self, code: &str, assessment: Value) -> Result<PortalTask, SimError> {
        self.patient_action(code, PatientAction::Save(assessment))
    }

    pub fn complete_task(&self, code: &str, assessment: Value) -> Result<PortalTask, SimError> {
        self.patient_action(code, PatientAction::Complete(assessment))
    }

    pub fn cancel_task(&self, code: &str) -> Result<PortalTask, SimError> {
        self.patient_action(code, PatientAction::Cancel)
    }

    /// Starts (or, with `None`, stops) the background patients.
    pub fn set_patients(&self, mode: Option<PatientsMode>) -> Result<(), String> {
        let mut slot = lock(&self.shared.patients);
        if let Some(old) = slot.take() {
            old.abort();
        }
        if let Some(mode) = mode {
            mode.check()?;
            *slot = Some(tokio::spawn(patients::run(self.shared.clone(), mode)));
        }
        Ok(())
    }
}
