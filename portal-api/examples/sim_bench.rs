//! Simulator benchmark: can the simulator keep up with later load tests?
//!
//! Starts the simulator in-process with no added latency (or targets a
//! running `portal-sim` with `--url`), then drives it with the real client
//! at a given concurrency from the same machine:
//!
//! 1. package submissions (`POST /tasks`, 20 tasks of about 2 KB each);
//! 2. small GETs (`GET /tasks/@{code}` of tasks stored in step 1).
//!
//! ```text
//! cargo run --release -p portal-api --features sim --example sim_bench -- \
//!     [--concurrency 64] [--packages 6000] [--gets 60000] [--url http://…]
//! ```
//!
//! Targets (issue 3): ≥ 2,000 packages/s and ≥ 10,000 GETs/s on 2 cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portal_api::sim::{SimConfig, Simulator};
use portal_api::{Client, ClientConfig};
use secrecy::SecretString;
use serde_json::json;
use task_model::{HostTask, Subject, User};

const KEY: &str = "bench-key";
const PACKAGE: usize = 20;

struct Args {
    concurrency: usize,
    packages: usize,
    gets: usize,
    url: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        concurrency: 64,
        packages: 6000,
        gets: 60_000,
        url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--packages" => a.packages = value()?.parse()?,
            "--gets" => a.gets = value()?.parse()?,
            "--url" => a.url = Some(value()?),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// A task of about 2 KB of JSON.
fn task(id: &str) -> HostTask {
    let fields: Vec<_> = (0..18)
        .map(|i| {
            json!({"id": format!("q{i:02}"), "type": "enumeration", "description": "Over the last two weeks, how often?"})
        })
        .collect();
    HostTask {
        host_system_id: id.to_owned(),
        display_name: format!("Questionnaire {id}"),
        instrument: json!({"id": "urn:bench", "version": "1.0", "title": "Bench instrument", "record": fields}).into(),
        form: json!({"instrument": {"id": "urn:bench", "version": "1.0"}, "defaultLocalization": "en", "pages": [{"id": "page1", "elements": []}]}).into(),
        subject: Subject {
            host_system_id: format!("subject-{id}"),
            display_name: "Subject".into(),
            users: vec![User {
                host_system_id: format!("user-{id}"),
                display_name: "Parent".into(),
                email: Some(format!("parent-{id}@example.org")),
            }],
        },
        parameters: None,
        assessment: None,
    }
}

struct Report {
    done: usize,
    elapsed: Duration,
    /// CPU time (all threads, user + system) the run used.
    cpu: Duration,
    latencies: Vec<Duration>,
}

/// CPU time used so far by this process, all threads (Linux
/// `/proc/self/stat`, clock ticks of 1/100 s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

impl Report {
    fn print(&mut self, what: &str, unit: &str) {
        self.latencies.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies.get(i).copied().unwrap_or_default()
        };
        println!(
            "{what}: {} {unit} in {:.2} s = {:.0} {unit}/s (p50 {:.2} ms, p99 {:.2} ms)",
            self.done,
            self.elapsed.as_secs_f64(),
            self.done as f64 / self.elapsed.as_secs_f64(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
        // The machine is shared: what the run cost in CPU says what two
        // idle cores would do, whatever else was running.
        let per_cpu_s = self.done as f64 / self.cpu.as_secs_f64().max(1e-9);
        println!(
            "  CPU {:.2} s (client and simulator together) = {:.0} {unit} per CPU-second, {:.0} {unit}/s on 2 idle cores",
            self.cpu.as_secs_f64(),
            per_cpu_s,
            per_cpu_s * 2.0
        );
    }
}

/// Runs `total` operations with `concurrency` workers; `op(i)` is one.
async fn drive<F, Fut>(concurrency: usize, total: usize, op: F) -> anyhow::Result<Report>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    Ok(Report {
        done: total,
        elapsed,
        cpu: cpu_time().saturating_sub(cpu_before),
        latencies,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let (url, _sim) = match &args.url {
        Some(url) => (url.clone(), None),
        None => {
            let sim = Simulator::start(SimConfig::new(KEY)).await?;
            (sim.url().to_owned(), Some(sim))
        }
    };
    let client = Client::new(
        ClientConfig::new(&url, SecretString::from(KEY.to_owned()))
            .with_timeout(Duration::from_secs(30))
            .with_page_size(PACKAGE),
    )?;
    let size = serde_json::to_vec(&task("size-probe-000000"))?.len();
    println!(
        "portal {url}; concurrency {}; {PACKAGE} tasks per package, {size} bytes per task",
        args.concurrency
    );

    // Packages are built before timing so only the wire and the portal count.
    let packages: Arc<Vec<Vec<HostTask>>> = Arc::new(
        (0..args.packages)
            .map(|p| {
                (0..PACKAGE)
                    .map(|i| task(&format!("b{p:06}-{i:02}")))
                    .collect()
            })
            .collect(),
    );
    let codes = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.packages)));
    let mut report = {
        let (client, packages, codes) = (client.clone(), packages.clone(), codes.clone());
        drive(args.concurrency, args.packages, move |i| {
            let (client, packages, codes) = (client.clone(), packages.clone(), codes.clone());
            async move {
                let stored = client.submit_tasks(&packages[i]).await?;
                if stored.len() != PACKAGE {
                    bail!("package {i}: {} tasks stored", stored.len());
                }
                if let Ok(mut c) = codes.lock() {
                    c.push(stored[0].code.clone());
                }
                Ok(())
            }
        })
        .await?
    };
    report.print("package submissions", "packages");
    println!(
        "  = {:.0} tasks/s, {:.1} MB/s of task JSON",
        (report.done * PACKAGE) as f64 / report.elapsed.as_secs_f64(),
        (report.done * PACKAGE * size) as f64 / report.elapsed.as_secs_f64() / 1e6
    );

    let codes: Arc<Vec<String>> = Arc::new(codes.lock().map(|c| c.clone()).unwrap_or_default());
    if codes.is_empty() {
        bail!("no tasks stored");
    }
    let mut report = {
        let (client, codes) = (client.clone(), codes.clone());
        drive(args.concurrency, args.gets, move |i| {
            let (client, codes) = (client.clone(), codes.clone());
            async move {
                let code = &codes[i.wrapping_mul(7919) % codes.len()];
                match client.get_task(code).await? {
                    Some(_) => Ok(()),
                    None => bail!("task {code} missing"),
                }
            }
        })
        .await?
    };
    report.print("small GETs", "requests");
    // Freeing a few hundred thousand documents is not part of the figures.
    std::mem::forget(packages);
    Ok(())
}
