//! Backtest metrics, computed the same way for flows and agents. The registry and the backtest
//! writes themselves are SQL (sql/registry.sql).
pub mod core;
pub mod sql;
