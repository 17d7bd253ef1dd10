//! Feature flags: per-environment switches, a kill switch and ordered targeting rules with
//! Unleash-compatible percentage rollouts and weighted variants.
//!
//! Pure, in this order from the bottom: defs.rs (limits, seeds, FlagError), semver.rs, context.rs
//! (the context and the hashed key), constraint.rs, rollout.rs (rollouts, variants, rules),
//! compile.rs (a definition's checks), core.rs (the compiled flag and its evaluation); bench.rs
//! (the benchmark's workload). sql.rs: the `#[pg_extern]` surface, the per-backend cache.
pub mod bench;
pub mod compile;
pub mod constraint;
pub mod context;
pub mod core;
pub mod defs;
pub mod rollout;
pub mod semver;
pub mod sql;
#[cfg(test)]
mod tests;
