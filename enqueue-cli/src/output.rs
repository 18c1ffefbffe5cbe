//! Where output goes: logs (tracing) and progress bars on stderr, summaries on
//! stdout. A progress bar is drawn only when stderr is a terminal; logs are
//! readable text on a terminal and one JSON object per line otherwise (or as
//! `--log-format` says).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// How this process talks to its caller, decided once at start.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// stderr is a terminal: progress bars and readable logs.
    pub interactive: bool,
}

impl Output {
    pub fn detect() -> Output {
        Output {
            interactive: std::io::stderr().is_terminal(),
        }
    }

    /// A progress bar of `len` steps (`None`: a spinner), hidden unless on a
    /// terminal. Logs written while it is drawn go above it.
    pub fn progress(&self, len: Option<u64>, message: &'static str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::hidden();
        }
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{msg:>10} [{bar:40}] {pos}/{len} tasks ({per_sec}, {eta} left)",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{spinner} {msg} {pos} tasks ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut active) = ACTIVE_BAR.lock() {
            *active = Some(bar.clone());
        }
        bar
    }
}

/// The bar being drawn, so that log lines can be printed above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// stderr for tracing, suspending the progress bar while a line is written.
#[derive(Clone, Copy, Debug)]
struct BarAwareStderr;

impl std::io::Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|active| active.clone());
        match bar {
            Some(bar) if !bar.is_finished() => bar.suspend(|| std::io::stderr().write(buf)),
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for BarAwareStderr {
    type Writer = BarAwareStderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the tracing subscriber. `RUST_LOG` wins over `-v`; the default is
/// `warn` on a terminal (the summary says the rest) and `info` for machines.
pub fn init_logging(format: LogFormat, verbose: u8, output: Output) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Plain => false,
        LogFormat::Auto => !output.interactive,
    };
    let default_level = match (verbose, output.interactive) {
        (0, true) => "warn",
        (0, false) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},sqlx=warn,hyper=warn,reqwest=warn,h2=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BarAwareStderr)
        .with_target(false);
    // A second init (tests calling `run` in-process) keeps the first one.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(output.interactive).try_init()
    };
}

/// Formats a duration for people: `850 ms`, `12.3 s`, `4 min 05 s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// Prints a JSON value as one line on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        // Our own summary types always serialize; say so if one ever fails.
        Err(e) => eprintln!("portal-sync: cannot format the JSON summary: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4 min 05 s");
    }
}
