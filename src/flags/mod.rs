//! Feature flags: per-environment switches, a kill switch and ordered targeting rules with
//! Unleash-compatible percentage rollouts and weighted variants. `core` is the pure evaluator.
pub mod core;
pub mod sql;
