//! The scheduler's jobs: what each one does, how a run is recorded in `quantops.job_runs`, and
//! the SQL surface (`quantops.run_job`, `quantops.status`). The worker in src/workers runs the
//! same jobs on their schedule.
pub mod core;
pub mod sql;
