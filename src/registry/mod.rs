//! The model registry is SQL (sql/registry.sql); this module holds the one piece of backend state
//! it needs: a token that lets the alias constraint trigger skip re-checking the gates that
//! promote() checked a moment earlier in the same transaction.
pub mod sql;
