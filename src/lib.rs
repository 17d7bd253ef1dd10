//! quantops: upkeep for quant and AI research platforms, inside PostgreSQL.
//! See README.md and docs/, and CONTRIBUTING.md for the layout: the bottom (error, gucs, spi, hash,
//! threads, xact, runtime, schedule) imports nothing above it; each capability has its folder
//! (core.rs pure, store.rs its SPI, sql.rs its `#[pg_extern]` surface, worker.rs where it has
//! one); the scheduler worker (workers/) is the top and reads the job registry.

// Every unsafe operation sits in an `unsafe` block with a `// SAFETY:` line saying why it holds.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// A #[pg_extern] returns pgrx's ErrorReport on error: large by design, and built once per error.
#![allow(clippy::result_large_err)]
// SQL rows read as tuples and #[pg_extern] TableIterator signatures are the types clippy calls complex.
#![allow(clippy::type_complexity)]

pgrx::pg_module_magic!(name, version);

pub mod audit;
pub mod backtest;
pub mod compat;
pub mod embedding;
pub mod error;
pub mod flags;
pub mod gucs;
pub mod hash;
pub mod index;
pub mod jobs;
pub mod prune;
pub mod registry;
pub mod runtime;
pub mod schedule;
pub mod spi;
pub mod threads;
pub mod workers;
pub mod xact;

/// Every capability with a part in the worker, in the order its passes run. The jobs are
/// declared by the capabilities themselves; this is only the list of them.
static CAPABILITIES: &[&schedule::Capability] =
    &[&audit::CAPABILITY, &embedding::CAPABILITY, &prune::CAPABILITY, &index::CAPABILITY, &backtest::CAPABILITY];

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/embedding.sql", name = "embedding", requires = ["bootstrap"]);
pgrx::extension_sql_file!("../sql/index.sql", name = "index", requires = ["embedding"]);
pgrx::extension_sql_file!("../sql/prune.sql", name = "prune", requires = ["index"]);
pgrx::extension_sql_file!("../sql/registry.sql", name = "registry", requires = ["prune"]);
pgrx::extension_sql_file!("../sql/backtest.sql", name = "backtest", requires = ["registry"]);
pgrx::extension_sql_file!("../sql/flags.sql", name = "flags", requires = ["backtest"]);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[allow(non_snake_case)]
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    schedule::register(CAPABILITIES);
    // SAFETY: a backend global that PostgreSQL sets before it loads preloaded libraries
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        workers::register();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'quantops'", "quantops.naptime = 1"]
    }
}
