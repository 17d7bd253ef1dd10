//! How a job run is recorded in `quantops.job_runs`, for the worker and for `run_job` alike.

use super::core as book;
use crate::schedule::JobOutcome;
use crate::spi::ReportError;
use pgrx::JsonB;
use serde_json::json;

/// Inserts the 'running' row of a job run and returns its id.
pub fn begin_run(job: &str, runner: &str) -> i64 {
    // INSERT ... RETURNING returns its row; a PostgreSQL ERROR propagates with its own SQLSTATE
    crate::spi::write_one::<i64>("insert into quantops.job_runs (job, runner) values ($1, $2) returning id", &[job.into(), runner.into()])
        .unwrap_or_else(|e| crate::spi::failed(&format!("recording the start of job \"{job}\""), e).report_error())
        .unwrap_or_default()
}

/// Records how a job run ended.
pub fn finish_run(id: i64, result: &Result<JobOutcome, String>) {
    let (status, rows, error, details) = match result {
        Ok(o) => ("succeeded", Some(o.rows), None, o.details.clone()),
        Err(e) => ("failed", None, Some(book::clip(e)), json!({})),
    };
    crate::spi::run(
        "recording the end of a job run",
        "update quantops.job_runs set finished_at = pg_catalog.clock_timestamp(), status = $2, rows = $3, \
         error = $4, details = $5 where id = $1",
        &[id.into(), status.into(), rows.into(), error.into(), JsonB(details).into()],
    );
}
