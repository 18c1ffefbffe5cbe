//! `portal-sim`: the Patient Portal simulator as a standalone server.
//!
//! ```text
//! portal-sim --listen 127.0.0.1:8080 --api-key KEY [--api-key KEY2] [--seed 7]
//!            [--duplicates reject|ignore-identical] [--max-package-size 100]
//!            [--count page|total] [--fault 'error:503@POST /tasks%0.1'] …
//!            [--patients-rate 20 --patients-fraction 0.8]
//!            [--tls-cert cert.pem --tls-key key.pem [--tls-client-ca ca.pem]]
//! ```
//!
//! Once listening it prints one line, `PORTAL_SIM_URL=<base url>`, on
//! stdout (use `--listen 127.0.0.1:0` for a free port). It stops on SIGTERM
//! or Ctrl-C. The control API is under `/_sim/` (see `portal_api::sim`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use portal_api::sim::{
    CountMode, DuplicatePolicy, FaultRule, PatientsMode, SimConfig, SimTls, Simulator,
};
use secrecy::SecretString;

#[derive(Parser, Debug)]
#[command(version, about = "Patient Portal simulator")]
struct Args {
    /// Address to listen on (port 0: a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Accepted API key; repeat for several (or comma-separate in the
    /// environment variable).
    #[arg(
        long = "api-key",
        env = "PORTAL_SIM_API_KEY",
        value_delimiter = ',',
        required = true,
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Seed of the fault and patients randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Duplicates::Reject)]
    duplicates: Duplicates,
    /// Tasks per package beyond which `POST /tasks` answers 413.
    #[arg(long, default_value_t = portal_api::sim::DEFAULT_MAX_PACKAGE_SIZE)]
    max_package_size: usize,
    /// What a task list's `count` reports.
    #[arg(long, value_enum, default_value_t = Count::Page)]
    count: Count,
    /// Fault rule, `KIND[:ARG][@ENDPOINT][%RATE][xTIMES]` or JSON; repeatable.
    #[arg(long = "fault", value_parser = FaultRule::parse_flag)]
    faults: Vec<FaultRule>,
    /// Background patients: actions per second.
    #[arg(long)]
    patients_rate: Option<f64>,
    /// Background patients: share of waiting tasks they start.
    #[arg(long, default_value_t = 1.0)]
    patients_fraction: f64,
    /// Serve HTTPS with this certificate chain (PEM)…
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// …and this private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Duplicates {
    Reject,
    IgnoreIdentical,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Count {
    Page,
    Total,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }

    let mut config = SimConfig::new("unused");
    config.listen = args.listen;
    config.api_keys = args
        .api_keys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .map(|k| SecretString::from(k.to_owned()))
        .collect();
    config.seed = args.seed;
    config.duplicates = match args.duplicates {
        Duplicates::Reject => DuplicatePolicy::Reject,
        Duplicates::IgnoreIdentical => DuplicatePolicy::IgnoreIdentical,
    };
    config.max_package_size = args.max_package_size;
    config.count = match args.count {
        Count::Page => CountMode::Page,
        Count::Total => CountMode::Total,
    };
    config.faults = args.faults;
    config.patients = args.patients_rate.map(|rate_per_sec| PatientsMode {
        rate_per_sec,
        fraction: args.patients_fraction,
    });
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(SimTls {
            cert_chain_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: args.tls_client_ca.as_ref().map(read).transpose()?,
        });
    }

    let sim = Simulator::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "PORTAL_SIM_URL={}", sim.url())?;
        out.flush()?;
    }
    let stop = sim.stop_signal();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop.send(true);
    });
    sim.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
