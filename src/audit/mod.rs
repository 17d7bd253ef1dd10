//! The audit trail: append-only, hash-chained per stream, with secrets redacted.
pub mod core;
pub mod sql;
