//! Vector prune: retention policies and lossless batched moves to the archive. The SQL surface
//! (set_retention, prune_plan, prune_batch, CALL prune, restore_archived) lives in sql/prune.sql;
//! this module is the worker's side: one committed transaction per batch.
pub mod worker;
