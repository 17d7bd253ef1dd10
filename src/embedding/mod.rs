//! Embedding refresh: exact staleness, built-in embedders, an HTTP provider called from the
//! worker, retries and dead letters, history for as-of reads.
//!
//! core.rs, batch.rs, egress.rs, jsonb.rs: pure. http.rs: the provider client (no PostgreSQL).
//! store.rs: its SPI. sql.rs: the `#[pg_extern]` surface. worker.rs: the drain the workers run.
//! model/: the local sentence model (pure); local.rs: its home in the embedder worker; ask.rs:
//! embed_text's way there (shared memory).
pub mod ask;
pub mod batch;
pub mod core;
pub mod egress;
pub mod error;
pub mod http;
pub mod jsonb;
pub mod local;
pub mod model;
pub mod sql;
pub mod store;
pub mod worker;

use crate::schedule::{Capability, Job};

pub static CAPABILITY: Capability = Capability {
    name: "embedding",
    jobs: &[
        // no row in quantops.jobs: the worker drains the queue on every pass (each_pass)
        Job { name: "refresh-embeddings", every: None, body: store::refresh_job, worker_body: None },
        Job { name: "sweep-embeddings", every: Some("1 hour"), body: store::sweep_job, worker_body: None },
    ],
    each_pass: Some(worker::each_pass),
    on_worker_start: None,
};
