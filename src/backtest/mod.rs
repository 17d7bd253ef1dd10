//! Backtests: the metrics core (flows, agents and SQL compute them the same way), the engine
//! that runs strategies over `quantops.bars` point in time, parameter sweeps on quantops' threads,
//! and the SQL surface. The registry and the backtest writes themselves are SQL
//! (sql/registry.sql); the market data tables are sql/backtest.sql.
pub mod core;
pub mod engine;
pub mod grid;
pub mod spec;
pub mod sql;
pub mod store;

pub use sql::CAPABILITY;
