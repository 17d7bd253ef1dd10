//! quantops: upkeep for quant and AI research platforms, inside PostgreSQL.
//! See README.md and docs/. Each capability lives in its own folder: a pure `core.rs` and a thin `sql.rs`.

pgrx::pg_module_magic!(name, version);

pub mod audit;
pub mod backtest;
pub mod config;
pub mod embedding;
pub mod error;
pub mod flags;
pub mod gucs;
pub mod hash;
pub mod ivf;
pub mod jobs;
pub mod prune;
pub mod registry;
pub mod spi;
pub mod threads;
pub mod workers;

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/embedding.sql", name = "embedding", requires = ["bootstrap"]);
pgrx::extension_sql_file!("../sql/prune.sql", name = "prune", requires = ["embedding"]);
pgrx::extension_sql_file!("../sql/registry.sql", name = "registry", requires = ["prune"]);
pgrx::extension_sql_file!("../sql/flags.sql", name = "flags", requires = ["registry"]);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[allow(non_snake_case)]
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
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
