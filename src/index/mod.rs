//! The embedding column and its IVFFlat index: `configure` (dims, lists, metric), index health
//! (centers read from the index's own pages, balance, drift and recall) and rebuilds that never
//! block writes (run by the worker as top-level statements).
//!
//! config.rs (dimension and lists rules) and core.rs (pages, assignment, k-means, recall, the
//! rebuild decision): pure. store.rs: its SPI. sql.rs: the `#[pg_extern]` surface. worker.rs:
//! the scheduled check and the queued rebuilds.
pub mod config;
pub mod core;
pub mod error;
pub mod sql;
pub mod store;
pub mod worker;

use crate::schedule::{Capability, Job};

pub static CAPABILITY: Capability = Capability {
    name: "index",
    jobs: &[Job { name: "maintain-index", every: Some("30 minutes"), body: store::sql_job, worker_body: Some(worker::run) }],
    each_pass: Some(worker::each_pass),
    on_worker_start: Some(worker::on_worker_start),
};
