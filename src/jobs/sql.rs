//! The jobs' SQL surface: `run_job` (any registered job, now, in the caller's transaction) and
//! `status`.

use super::core as book;
use super::store::{begin_run, finish_run};
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
            JobError::Unknown(_) => Some(format!("known jobs: {}", crate::schedule::names())),
            _ => None,
        }
    }
}
sql_error!(JobError);

/// Runs a job now, in this transaction, and records it in quantops.job_runs. For pg_cron:
/// `select cron.schedule('quantops-verify-audit', '0 * * * *', $$select quantops.run_job('verify-audit')$$)`.
/// A job that fails is recorded as failed and returned, not raised, so the record survives.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn run_job(job: Option<&str>) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("run_job")?;
    let job = job.ok_or(JobError::Null)?;
    let Some(found) = crate::schedule::find(job) else {
        return Err(JobError::Unknown(job.to_string()).into());
    };
    let started = std::time::Instant::now();
    let runner: String = crate::spi::read_one("select 'sql:' || quantops._caller_role()", &[])
        .unwrap_or_else(|e| crate::spi::failed("reading the caller's role", e).report_error())
        .unwrap_or_default();
    let id = begin_run(job, &runner);
    let result = (found.body)();
    finish_run(id, &result);
    let out = match &result {
        Ok(o) => json!({ "run_id": id, "job": job, "status": "succeeded", "rows": o.rows, "details": o.details }),
        Err(e) => json!({ "run_id": id, "job": job, "status": "failed", "error": e }),
    };
    audit::store::append(
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
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.run_job(text)', 'service_role');",
    name = "grant_run_job",
    requires = [run_job]
);

/// quantops at a glance: version, settings, workers alive, last run of each job, counts.
/// STABLE: it only reads, so PostgREST sends it as a read-only GET and it runs on a hot standby.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
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
        &[gucs::enabled().into(), gucs::database().into(), (gucs::naptime().as_secs() as i64).into(), crate::runtime::preloaded().into()],
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
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.status()', 'service_role');",
    name = "grant_status",
    requires = [status]
);

/// The version of the quantops library this server has loaded. After a new build is installed,
/// `ALTER EXTENSION quantops UPDATE` brings the SQL objects to it; `status()` shows the version of
/// the SQL objects. Writes nothing; anyone may call it.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.version()', 'anon');",
    name = "grant_version",
    requires = [version]
);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_is_the_library_version() {
        assert_eq!(Spi::get_one::<String>("select quantops.version()").unwrap().as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    /// Every job of the registry with a period has its row in quantops.jobs with that period, and
    /// every row there is a job of the registry.
    #[pg_test]
    fn the_registry_and_the_jobs_table_agree() {
        let rows: Vec<(String, String)> = Spi::connect(|c| {
            c.select("select name, run_every::text from quantops.jobs order by name", None, &[])
                .unwrap()
                .map(|r| (r.get::<String>(1).unwrap().unwrap(), r.get::<String>(2).unwrap().unwrap()))
                .collect()
        });
        let mut want: Vec<(String, String)> = crate::schedule::jobs()
            .filter_map(|j| j.every.map(|e| (j.name, e)))
            .map(|(n, e)| {
                let e = Spi::get_one_with_args::<String>("select $1::interval::text", &[e.into()]).unwrap().unwrap();
                (n.to_string(), e)
            })
            .collect();
        want.sort();
        assert!(!want.is_empty());
        assert_eq!(rows, want);
        // a job of the registry without a period (the continuous drain) runs on request
        assert!(crate::schedule::find("refresh-embeddings").is_some_and(|j| j.every.is_none()));
    }
}
