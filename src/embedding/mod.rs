//! Embedding refresh: exact staleness, built-in embedders, an HTTP provider called from the
//! worker, retries and dead letters, history for as-of reads.
pub mod core;
pub mod egress;
pub mod http;
pub mod jsonb;
pub mod sql;
pub mod worker;
