//! Feature flags: per-environment switches, a kill switch and ordered targeting rules with
//! Unleash-compatible percentage rollouts and weighted variants.
//!
//! Pure: core.rs (the definition, the evaluation and its result), compile.rs (a definition's
//! checks), context.rs (the context and the hashed key), constraint.rs, semver.rs, rollout.rs
//! (rollouts, variants, rules), bench.rs (the benchmark's workload). sql.rs: the `#[pg_extern]` surface, the per-backend cache.
pub mod bench;
pub mod compile;
pub mod constraint;
pub mod context;
pub mod core;
pub mod rollout;
pub mod semver;
pub mod sql;
#[cfg(test)]
mod tests;
