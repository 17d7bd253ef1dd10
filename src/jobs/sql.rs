//! Job execution and the scheduler's SQL surface.

use super::core::{self as book, JobOutcome};
use crate::error::SqlError;
use crate::spi::ReportError;
use crate::{audit, gucs, sql_error};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job must not be null")]
    Null,
    #[error("job \"{0}\" does not exist")]
    Unknown(String),
}

impl SqlError for JobError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            JobError::Null => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            JobError::Unknown(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            JobError::Unknown(_) => Some(format!("known jobs: {}", book::KNOWN_JOBS.join(", "))),
            _ => None,
        }
    }
}
sql_error!(JobError);

/// The most rows that run_job('prune') moves in the caller's transaction.
pub const SQL_PRUNE_LIMIT: i64 = 50_000;

/// Runs one job's body in the current transaction. Err is a job failure (recorded, not raised).
pub fn execute(job: &str) -> Result<JobOutcome, String> {
    match job {
        "verify-audit" => {
            let mut rows = 0i64;
            let mut bad = Vec::new();
            for s in audit::sql::STREAMS {
                let (chain, head) = audit::sql::load_chain(s);
                rows += chain.len() as i64;
                let problems = audit::core::verify_chain(&chain, head);
                if let Some(p) = problems.iter().min_by_key(|p| p.seq()) {
                    bad.push(format!("stream {s}: {} problem(s), first: {}", problems.len(), p.describe()));
                }
            }
            if bad.is_empty() {
                Ok(JobOutcome { rows, details: json!({ "streams": audit::sql::STREAMS }) })
            } else {
                Err(format!("audit chain verification failed: {}", bad.join("; ")))
            }
        }
        "refresh-embeddings" => {
            let (e, vt) = crate::embedding::sql::builtin_active().map_err(|e| e.to_string())?;
            let b = crate::embedding::sql::drain(&e, &vt, 100_000, std::time::Duration::from_secs(60), 2000);
            Ok(JobOutcome {
                rows: b.done,
                details: json!({ "embedder": e.name, "version": e.version, "done": b.done,
                                 "unchanged": b.unchanged, "failed": b.failed }),
            })
        }
        "sweep-embeddings" => match crate::embedding::sql::active().map_err(|e| e.to_string())? {
            Some(e) => Ok(JobOutcome { rows: crate::embedding::sql::sweep(&e), details: json!({ "embedder": e.name }) }),
            None => Ok(JobOutcome { rows: 0, details: json!({ "embedder": null }) }),
        },
        // from SQL (run_job) the whole prune is one transaction, so it is bounded; the worker and
        // CALL quantops.prune() commit per batch
        "prune" => {
            Spi::run("select quantops._prune_start(null)").map_err(|e| e.to_string())?;
            let (mut moved, mut batches) = (0i64, 0i64);
            while moved < SQL_PRUNE_LIMIT {
                let b = Spi::get_one_with_args::<JsonB>(
                    "select quantops.prune_batch(null, $1)",
                    &[(crate::prune::worker::BATCH as i64).min(SQL_PRUNE_LIMIT - moved).try_into().unwrap_or(1i32).into()],
                )
                .map_err(|e| e.to_string())?
                .map(|j| j.0)
                .unwrap_or_default();
                if b["idle"].as_bool().unwrap_or(true) {
                    break;
                }
                moved += b["moved"].as_i64().unwrap_or(0);
                batches += 1;
            }
            Ok(JobOutcome { rows: moved, details: json!({ "moved": moved, "batches": batches, "limit": SQL_PRUNE_LIMIT }) })
        }
        "maintain-index" => {
            let t = match crate::ivf::sql::resolve(None) {
                Ok(t) => t,
                Err(crate::ivf::sql::IvfError::NotConfigured) => {
                    return Ok(JobOutcome { rows: 0, details: json!({ "skipped": "quantops has no IVFFlat index yet" }) })
                }
                Err(e) => return Err(e.to_string()),
            };
            let p = crate::ivf::sql::plan(&t, false, false, "job").map_err(|e| e.to_string())?;
            Ok(JobOutcome { rows: 0, details: crate::ivf::sql::summarize_plan(p) })
        }
        other => Err(format!("job \"{other}\" has no implementation in this version of quantops")),
    }
}

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

/// Runs a job now, in this transaction, and records it in quantops.job_runs. For pg_cron:
/// `select cron.schedule('quantops-verify-audit', '0 * * * *', $$select quantops.run_job('verify-audit')$$)`.
/// A job that fails is recorded as failed and returned, not raised, so the record survives.
#[pg_extern]
fn run_job(job: Option<&str>) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("run_job")?;
    let job = job.ok_or(JobError::Null)?;
    if !book::is_known(job) {
        return Err(JobError::Unknown(job.to_string()).into());
    }
    let started = std::time::Instant::now();
    let runner: String = crate::spi::read_one("select 'sql:' || quantops._caller_role()", &[])
        .unwrap_or_else(|e| crate::spi::failed("reading the caller's role", e).report_error())
        .unwrap_or_default();
    let id = begin_run(job, &runner);
    let result = execute(job);
    finish_run(id, &result);
    let out = match &result {
        Ok(o) => json!({ "run_id": id, "job": job, "status": "succeeded", "rows": o.rows, "details": o.details }),
        Err(e) => json!({ "run_id": id, "job": job, "status": "failed", "error": e }),
    };
    audit::sql::append(
        "quantops",
        "run_job",
        &json!({ "job": job }),
        if result.is_ok() { "ok" } else { "error" },
        Some(&out),
        Some(started.elapsed().as_micros() as i64),
        None,
    );
    Ok(JsonB(out))
}

/// quantops at a glance: version, settings, workers alive, last run of each job, counts.
/// STABLE: it only reads, so PostgREST sends it as a read-only GET and it runs on a hot standby.
#[pg_extern(stable)]
fn status() -> JsonB {
    // a read (never assigns a transaction id): status() works on a hot standby too
    let extra: Option<JsonB> = crate::spi::read_one(
        r#"
        select pg_catalog.jsonb_build_object(
          'version', (select extversion from pg_catalog.pg_extension where extname = 'quantops'),
          -- a hot standby in recovery serves reads; its worker waits for a promotion
          'standby', pg_catalog.pg_is_in_recovery(),
          'settings', (select pg_catalog.jsonb_build_object('dims', embedding_dims, 'lists', index_lists,
                              'metric', index_metric, 'configured_at', configured_at) from quantops.settings),
          'workers', coalesce((select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                      'name', w.name, 'pid', w.pid, 'state', w.state, 'database', w.database,
                      'started_at', w.started_at,
                      'heartbeat_age_s', round(extract(epoch from pg_catalog.now() - w.heartbeat_at)::numeric, 1),
                      'process_alive', exists (select 1 from pg_catalog.pg_stat_activity a where a.pid = w.pid
                                                 and a.backend_type = 'quantops scheduler'),
                      'naptime_s', w.naptime_s) order by w.name)
                     from quantops.workers w), '[]'::jsonb),
          'jobs', coalesce((select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                      'job', j.name, 'enabled', j.enabled, 'run_every', j.run_every::text,
                      'next_run_at', j.next_run_at,
                      'last_run', (select pg_catalog.jsonb_build_object('status', r.status, 'started_at', r.started_at,
                                      'duration_ms', round(extract(epoch from r.finished_at - r.started_at)::numeric * 1000, 1),
                                      'rows', r.rows, 'runner', r.runner, 'error', r.error)
                                   from quantops.job_runs r where r.job = j.name order by r.id desc limit 1)) order by j.name)
                     from quantops.jobs j), '[]'::jsonb),
          'counts', pg_catalog.jsonb_build_object(
              'signals', (select count(*) from quantops.signal_embeddings),
              'embedded', (select count(*) from quantops.signal_embeddings where embedding is not null),
              'archived', (select count(*) from quantops.signal_embeddings_archive),
              'backtests', (select count(*) from quantops.backtest_results),
              'audit_rows', (select count(*) from quantops.audit_log),
              'job_runs', (select count(*) from quantops.job_runs),
              'failed_job_runs_24h', (select count(*) from quantops.job_runs
                                      where status = 'failed' and started_at > pg_catalog.now() - interval '1 day')),
          'scheduler', pg_catalog.jsonb_build_object('enabled', $1, 'database', $2, 'naptime_s', $3,
              'preloaded', $4))
        "#,
        &[gucs::enabled().into(), gucs::database().into(), (gucs::naptime().as_secs() as i64).into(), crate::workers::preloaded().into()],
    )
    .unwrap_or_else(|e| crate::spi::failed("reading quantops' status", e).report_error());
    let mut v = extra.map(|j| j.0).unwrap_or_else(|| json!({}));
    // alive = a live process with a fresh heartbeat
    if let Some(ws) = v.get_mut("workers").and_then(|w| w.as_array_mut()) {
        for w in ws {
            let age = w["heartbeat_age_s"].as_f64().unwrap_or(f64::INFINITY);
            let nap = w["naptime_s"].as_i64().unwrap_or(10) as i32;
            let alive = w["process_alive"].as_bool().unwrap_or(false) && book::heartbeat_fresh(age, nap);
            w["alive"] = json!(alive);
        }
    }
    JsonB(v)
}
