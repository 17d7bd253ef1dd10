//! The vocabulary every part of a flag definition shares: its limits, Unleash's seeds, and why a
//! definition is rejected. A leaf: it imports nothing of the other flag modules.

/// Unleash's seed for percentage rollouts.
pub const ROLLOUT_SEED: u32 = 0;
/// Unleash's seed for variant selection.
pub const VARIANT_SEED: u32 = 86_028_157;
/// The largest weight of one variant.
pub const MAX_WEIGHT: u64 = 1_000_000;
/// The most variants in one list (so that the total weight fits a `u32`).
pub const MAX_VARIANTS: usize = 1000;

// ---------------------------------------------------------------------------------------------
// errors

/// Why a flag definition was rejected. The SQL shell maps every variant to 22023
/// (invalid_parameter_value). `at` names the place: `flag`, `rule 2`, `rule 2 constraint 1`,
/// `rule 1 rollout`, `rule 1 variant 2`, `flag variant 1 override 1` (positions count from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("flag key must not be empty")]
    EmptyKey,
    #[error("flag definition is not valid json: {message}")]
    InvalidJson { message: String },
    #[error("{at}: must be a json object")]
    NotAnObject { at: String },
    #[error("{at}: unknown key \"{key}\"")]
    UnknownKey { at: String, key: String },
    #[error("{at}: missing \"{key}\"")]
    MissingKey { at: String, key: &'static str },
    #[error("{at}: \"{key}\" must be {expected}")]
    WrongType { at: String, key: &'static str, expected: &'static str },
    #[error("unknown environment \"{name}\" (expected local, staging or production)")]
    UnknownEnvironment { name: String },
    #[error("{at}: unknown op \"{op}\"")]
    UnknownOp { at: String, op: String },
    #[error("{at}: op \"{op}\" takes \"{wanted}\", not \"{given}\"")]
    WrongValueKey { at: String, op: &'static str, wanted: &'static str, given: &'static str },
    #[error("{at}: \"value\" must be a number for op \"{op}\"")]
    NotANumber { at: String, op: &'static str },
    #[error("{at}: invalid semver \"{value}\" for op \"{op}\"")]
    InvalidSemver { at: String, op: &'static str, value: String },
    #[error("{at}: \"values\" must not be empty for op \"{op}\"")]
    EmptyValues { at: String, op: &'static str },
    #[error("{at}: empty string in \"values\" for op \"{op}\"")]
    EmptyValue { at: String, op: &'static str },
    #[error("{at}: \"case_insensitive\" does not apply to op \"{op}\"")]
    CaseInsensitiveNotApplicable { at: String, op: &'static str },
    #[error("{at}: percentage {value} not in 0..100")]
    Percentage { at: String, value: String },
    #[error("{at}: stickiness \"random\" is not supported (evaluation is deterministic)")]
    RandomStickiness { at: String },
    #[error("{at}: weight {value} must be an integer in 0..1000000")]
    Weight { at: String, value: String },
    #[error("{at}: variant weights must sum to more than 0")]
    ZeroTotalWeight { at: String },
    #[error("{at}: more than 1000 variants")]
    TooManyVariants { at: String },
    #[error("{at}: duplicate variant \"{name}\"")]
    DuplicateVariant { at: String, name: String },
    #[error("{at}: variants must all set the same stickiness, or none")]
    MixedStickiness { at: String },
}
