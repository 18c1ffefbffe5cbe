//! `portal-sync import FILE|-`: load host tasks into the store.
//!
//! The store does the parsing (JSON array or NDJSON) and reports each bad
//! record with its position; this command prints those one per line on
//! stderr and a summary on stdout (or `--json`), and exits 1 if any record
//! was not stored.

use std::io::Read;

use serde::Serialize;
use task_model::store::{AnyStore, ImportReport, TaskStore};

use crate::cli::ImportArgs;
use crate::exit::{CommandError, ExitStatus};
use crate::output::print_json;

/// The `--json` form of an import.
#[derive(Debug, Serialize)]
pub struct ImportSummary {
    pub source: String,
    pub records: u64,
    pub inserted: u64,
    pub updated: u64,
    /// Known tasks already past submission, left alone.
    pub skipped: u64,
    /// Records that could not be stored.
    pub failed: u64,
    pub errors: Vec<ImportProblem>,
    pub skipped_records: Vec<ImportProblem>,
}

#[derive(Debug, Serialize)]
pub struct ImportProblem {
    /// `line N` or `record N (array index)`.
    pub position: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub message: String,
}

impl ImportSummary {
    pub fn from_report(source: String, report: &ImportReport) -> ImportSummary {
        ImportSummary {
            source,
            records: report.records(),
            inserted: report.inserted,
            updated: report.updated,
            skipped: report.skipped.len() as u64,
            failed: report.errors.len() as u64,
            errors: report
                .errors
                .iter()
                .map(|e| ImportProblem {
                    position: e.position.to_string(),
                    task_id: e.task_id.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            skipped_records: report
                .skipped
                .iter()
                .map(|s| ImportProblem {
                    position: s.position.to_string(),
                    task_id: Some(s.task_id.clone()),
                    message: format!(
                        "already {}; host fields are frozen once submitted",
                        s.status
                    ),
                })
                .collect(),
        }
    }
}

/// Runs `import`.
pub async fn run_import(
    store: &AnyStore,
    store_url: &str,
    args: &ImportArgs,
) -> Result<ExitStatus, CommandError> {
    let (source, input): (String, Box<dyn Read + Send>) = if args.file.as_os_str() == "-" {
        ("stdin".to_string(), Box::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file).map_err(|source| CommandError::Input {
            what: format!("import file {}", args.file.display()),
            source,
        })?;
        (
            args.file.display().to_string(),
            Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
        )
    };
    let report = store
        .import(input)
        .await
        .map_err(|e| CommandError::store(store_url, e))?;
    let summary = ImportSummary::from_report(source, &report);
    for e in &report.errors {
        eprintln!(
            "portal-sync: import {}: {e} (record skipped; fix it and import the file again)",
            summary.source
        );
    }
    for s in &report.skipped {
        eprintln!("portal-sync: import {}: {s}", summary.source);
    }
    if args.json {
        print_json(&summary);
    } else {
        println!(
            "imported {}: {} record(s): {} new, {} updated, {} skipped (already submitted), {} failed",
            summary.source,
            summary.records,
            summary.inserted,
            summary.updated,
            summary.skipped,
            summary.failed
        );
    }
    tracing::info!(
        source = %summary.source,
        inserted = summary.inserted,
        updated = summary.updated,
        skipped = summary.skipped,
        failed = summary.failed,
        "import finished"
    );
    Ok(ExitStatus::done_or_partial(
        summary.failed > 0 || summary.skipped > 0,
    ))
}
