//! The background workers, registered only when quantops is loaded through
//! shared_preload_libraries: the scheduler runs the jobs of the registry (src/schedule.rs); the
//! embedder holds the local sentence model. They are the top of the crate: nothing imports them.
use pgrx::pg_sys;

pub mod embedder;
pub mod scheduler;

pub fn register() {
    crate::runtime::init_preloaded();
    crate::embedding::ask::init_shmem();
    scheduler::register();
    embedder::register();
}

/// Registers a quantops background worker: started after recovery (never on a standby), with
/// SPI, restarted by the postmaster 5 s after a crash.
fn register_worker(name: &str, function: &str) {
    use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
    BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_function(function)
        .set_library("quantops")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(std::time::Duration::from_secs(5)))
        .load();
}

/// Whether this database has the extension (a worker waits until it does).
fn extension_installed() -> bool {
    use crate::spi::ReportError;
    crate::spi::read_one::<bool>("select exists (select 1 from pg_catalog.pg_extension where extname = 'quantops')", &[])
        .unwrap_or_else(|e| crate::spi::failed("looking for the extension", e).report_error())
        .unwrap_or(false)
}

/// Marks as failed the runs that an earlier incarnation of a worker (`runner`) left running
/// (kill -9, crash, immediate shutdown).
fn mark_interrupted(runner: &str) {
    crate::spi::run(
        "marking interrupted runs",
        "update quantops.job_runs set status = 'failed', finished_at = pg_catalog.clock_timestamp(), \
           error = 'interrupted: the worker stopped before the run ended' \
         where status = 'running' and runner = $1 and pid <> pg_catalog.pg_backend_pid()",
        &[runner.into()],
    );
}

/// Settings every quantops worker fixes for its life, right after it connects.
pub(crate) fn harden_session() {
    // The worker is a superuser session of a database that another role may own (Supabase: the
    // database belongs to postgres, who may ALTER DATABASE ... SET): no such setting decides what
    // it runs or stops it. search_path pg_catalog first and pg_temp last (every quantops object it
    // uses is schema-qualified); its own role; no read-only default, no timeouts, the default
    // tablespaces. These win over the database's and role's settings for the life of the process.
    // SAFETY: the worker's main thread, before any transaction.
    for (name, value) in [
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"role", c"none"),
        (c"default_transaction_read_only", c"off"),
        (c"default_transaction_isolation", c"read committed"),
        (c"statement_timeout", c"0"),
        (c"lock_timeout", c"0"),
        (c"idle_in_transaction_session_timeout", c"0"),
        (c"default_tablespace", c""),
        (c"temp_tablespaces", c""),
        (c"session_replication_role", c"origin"),
    ] {
        // SAFETY: the worker's main thread, before any transaction; both names are NUL-terminated
        // C strings of GUCs PostgreSQL defines
        unsafe {
            pg_sys::SetConfigOption(name.as_ptr(), value.as_ptr(), pg_sys::GucContext::PGC_SUSET, pg_sys::GucSource::PGC_S_OVERRIDE);
        }
    }
}
