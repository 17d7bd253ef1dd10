//! Vector prune: retention policies and lossless batched moves to the archive. The SQL surface
//! (set_retention, prune_plan, prune_batch, CALL prune, restore_archived) lives in sql/prune.sql;
//! store.rs runs the job in one transaction (from SQL), worker.rs one committed transaction per
//! batch.
pub mod store;
pub mod worker;

use crate::schedule::{Capability, Job};

pub static CAPABILITY: Capability = Capability {
    name: "prune",
    jobs: &[Job { name: "prune", every: Some("1 hour"), body: store::sql_job, worker_body: Some(worker::run) }],
    each_pass: None,
    on_worker_start: None,
};
