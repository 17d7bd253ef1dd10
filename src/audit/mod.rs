//! The audit trail: append-only, hash-chained per stream, with secrets redacted.
pub mod core;
pub mod sql;
pub mod store;

use crate::schedule::{Capability, Job};

pub static CAPABILITY: Capability = Capability {
    name: "audit",
    jobs: &[Job { name: "verify-audit", every: Some("1 hour"), body: store::verify_job, worker_body: None }],
    each_pass: None,
    on_worker_start: None,
};
