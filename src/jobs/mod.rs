//! The scheduler's jobs: what each one does, how a run is recorded in `quantops.job_runs`, and
//! the SQL surface (`quantops.run_job`, `quantops.status`). The jobs themselves are declared by
//! their capabilities in the registry (src/schedule.rs).
pub mod core;
pub mod sql;
pub mod store;
