//! The pure feature-flag evaluator: a flag definition (JSON) is parsed and validated once into a
//! [`CompiledFlag`], which then evaluates against a context without allocating.
//!
//! # The definition
//!
//! ```json
//! {"description": "momentum v2 for the desk",
//!  "environments": {"production": false, "staging": true, "local": true},
//!  "kill_switch": false,
//!  "rules": [
//!    {"name": "momentum-desk",
//!     "constraints": [{"attribute": "role", "op": "in", "values": ["desk", "admin"]}],
//!     "rollout": {"percentage": 25, "stickiness": "user_id", "group_id": "strategy.momentum_v2"},
//!     "variants": [{"name": "aggressive", "weight": 50, "payload": {"leverage": 2}},
//!                  {"name": "conservative", "weight": 50}]}
//!  ],
//!  "variants": [{"name": "baseline", "weight": 1}]}
//! ```
//!
//! - Top level: `environments` (required: an object whose keys are `local`, `staging` or
//!   `production`, values booleans; an environment that is absent is off), `kill_switch`
//!   (boolean, default false), `rules` (array, default empty), `variants` (the flag's own variants,
//!   used when the deciding rule has none), `description` (string, informative). Any other key
//!   is rejected. Environment names are a closed set so that a typo such as `"prod"` is an error
//!   when the flag is written, not a flag that is silently off.
//! - A rule: `name` (string, informative), `constraints` (array, all must match), `rollout`,
//!   `variants`. A rule with neither constraints nor rollout matches everyone (Unleash's
//!   `default` strategy).
//! - A constraint: `attribute` (non-empty string), `op`, `values` (array of strings, numbers or
//!   booleans, compared by their text) for `in`, `not_in`, `str_contains`, `str_starts_with`,
//!   `str_ends_with`; `value` for `eq`, `neq` (string, number or boolean), `num_eq`, `num_gt`,
//!   `num_gte`, `num_lt`, `num_lte` (a JSON number), `semver_eq`, `semver_gt`, `semver_gte`,
//!   `semver_lt`, `semver_lte` (a SemVer 2.0 string, no leading `v`). Optional `inverted`
//!   (negates the result, after everything else, as Unleash does) and `case_insensitive` (only on
//!   `in`, `not_in`, `eq`, `neq` and `str_*`). `str_*` need at least one value and no empty
//!   string; `in` and `not_in` accept an empty list (never in, always not in), as Unleash does.
//! - A rollout: `percentage` (integer 0..=100), `stickiness` (`"default"` unless given: the
//!   attribute whose value is hashed; `"default"` means `user_id`, else `session_id`), `group_id`
//!   (non-empty string, default the flag key). `"random"` is rejected: evaluation here is
//!   deterministic.
//! - A variant: `name` (non-empty, unique in its list), `weight` (integer 0..=1000000; a list
//!   must weigh more than 0 in total; a weight of 0 is reachable only through an override),
//!   `payload` (any JSON), `stickiness` (set on every variant of a list with the same value, or
//!   on none), `overrides` (`[{"attribute": "user_id", "values": ["132", "61"]}]`). An empty
//!   list is the same as no list.
//!
//! # The context
//!
//! A flat JSON object of scalars (see [`Context`]). `user_id` may also be spelled `userId`,
//! `session_id` `sessionId` and `remote_address` `remoteAddress`: the rule's spelling is looked
//! up first, then the other. A null, an array or an object counts as missing. Numbers compare as
//! text by their JSON spelling (`42`), booleans as `true`/`false`; numeric ops also accept a
//! string that parses as a finite number (`"12.0"`).
//!
//! # Evaluation, in OpenFeature's vocabulary
//!
//! 1. kill switch on: `false`, `DISABLED`;
//! 2. the environment is off or absent: `false`, `DISABLED`;
//! 3. no rules: `true`, `STATIC`;
//! 4. otherwise, as Unleash does with a feature's strategies, the flag is on if any rule is true,
//!    and the first true rule (in order) decides. A rule is true when all its constraints match
//!    and, if it has a rollout, the context falls inside the rollout. A rule whose constraints
//!    match but whose rollout excludes the context falls through to the next rule. The reason is
//!    `SPLIT` when the deciding rule has a rollout, `TARGETING_MATCH` otherwise;
//! 5. no rule true: `false`, `DEFAULT`.
//!
//! When the flag is on, a variant is picked from the deciding rule's variants, else from the
//! flag's variants (none if neither has any). An override naming the context picks its variant
//! (first variant in order whose override matches); otherwise the stickiness value is hashed.
//! A variant picked by the hash makes the reason `SPLIT`; one picked by an override turns
//! `STATIC` into `TARGETING_MATCH`. Errors (`ERROR` with an [`ErrorCode`]) are the shell's:
//! [`Evaluation::flag_not_found`] and [`Evaluation::error`] build them.
//!
//! # Bucketing (compatible with Unleash)
//!
//! The hashed key is the UTF-8 bytes of `"<group_id>:<stickiness value>"`, hashed with
//! MurmurHash3 x86 32-bit ([`crate::hash::murmur3_32`]).
//! - rollout: `murmur3(key, 0) % 100 + 1 <= percentage`, and a percentage of 0 is never in;
//! - variants: `target = murmur3(key, 86028157) % total_weight + 1`; walk the variants in order,
//!   skipping weight 0, summing weights, and pick the first whose running sum is `>= target`.
//!   The group id of a rule's variants is its rollout's group id (the flag key without a
//!   rollout); of the flag's variants, the flag key. Their stickiness is the variants' own, else
//!   the rule's rollout stickiness, else `default`, which for variants means `user_id`, else
//!   `session_id`, else `remote_address`.
//!
//! Where Unleash draws a random number, this evaluator is deterministic:
//! - a rollout whose stickiness value is missing is out, except a `default` stickiness rollout
//!   at 100 %, which Unleash's random draw always lets in (a named attribute that is missing is
//!   out even at 100 %, as in Unleash);
//! - variants whose stickiness value is missing: if a single variant carries all the weight it
//!   is picked (every draw would pick it), otherwise no variant is returned and the flag is still
//!   on.
//!
//! Differences from Unleash that a reader might trip on: no `properties` sub-object (the context
//! is flat), no date, regex or CIDR operators, operator names are lower case, constraint values
//! are not trimmed, and a number in the context is spelled as serde_json spells it (an integer
//! as JavaScript would; a float may differ, e.g. `1.0` where JavaScript writes `1`).

use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use serde_json::{Map, Number, Value};

use crate::hash::murmur3_32;

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

// ---------------------------------------------------------------------------------------------
// environments, reasons, error codes

/// The environments a flag is switched on or off in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Local,
    Staging,
    Production,
}

impl Environment {
    pub const ALL: [Environment; 3] = [Environment::Local, Environment::Staging, Environment::Production];

    pub fn parse(name: &str) -> Result<Environment, FlagError> {
        match name {
            "local" => Ok(Environment::Local),
            "staging" => Ok(Environment::Staging),
            "production" => Ok(Environment::Production),
            _ => Err(FlagError::UnknownEnvironment { name: name.to_string() }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Environment::Local => "local",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// OpenFeature's resolution reasons (the subset this evaluator produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Static,
    TargetingMatch,
    Split,
    Disabled,
    Default,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Default => "DEFAULT",
            Reason::Error => "ERROR",
        }
    }
}

/// OpenFeature's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ProviderNotReady,
    FlagNotFound,
    ParseError,
    TypeMismatch,
    TargetingKeyMissing,
    InvalidContext,
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProviderNotReady => "PROVIDER_NOT_READY",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The result of one evaluation; borrows names and payloads from the [`CompiledFlag`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<'f> {
    pub value: bool,
    pub variant: Option<&'f str>,
    pub payload: Option<&'f Value>,
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    /// The deciding rule, counted from 0.
    pub rule: Option<usize>,
}

impl Evaluation<'static> {
    /// The caller's default, reason `ERROR`, code `FLAG_NOT_FOUND`.
    pub fn flag_not_found(default: bool) -> Evaluation<'static> {
        Evaluation::error(ErrorCode::FlagNotFound, default)
    }

    /// The caller's default, reason `ERROR`, with `code`.
    pub fn error(code: ErrorCode, default: bool) -> Evaluation<'static> {
        Evaluation { value: default, variant: None, payload: None, reason: Reason::Error, error_code: Some(code), rule: None }
    }

    fn off(reason: Reason) -> Evaluation<'static> {
        Evaluation { value: false, variant: None, payload: None, reason, error_code: None, rule: None }
    }
}

// ---------------------------------------------------------------------------------------------
// context

/// One scalar of the evaluation context, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ContextValue<'a> {
    Str(&'a str),
    Number(&'a Number),
    Bool(bool),
}

impl<'a> ContextValue<'a> {
    /// Calls `f` with the value's text (numbers spelled by serde_json, into a stack buffer).
    fn with_text<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            ContextValue::Str(s) => f(s),
            ContextValue::Bool(b) => f(if b { "true" } else { "false" }),
            ContextValue::Number(n) => {
                let mut buf = StackText::new();
                match write!(buf, "{n}") {
                    Ok(()) => f(buf.as_str()),
                    Err(_) => f(&n.to_string()),
                }
            }
        }
    }

    fn as_f64(self) -> Option<f64> {
        let x = match self {
            ContextValue::Number(n) => n.as_f64()?,
            ContextValue::Str(s) => s.trim().parse::<f64>().ok()?,
            ContextValue::Bool(_) => return None,
        };
        x.is_finite().then_some(x)
    }
}

/// Where attributes come from. Implemented for a JSON object (what the SQL shell has after
/// parsing a jsonb), a JSON value (an object; anything else has no attributes) and a slice of
/// `(name, value)` string pairs.
pub trait Context {
    fn get(&self, key: &str) -> Option<ContextValue<'_>>;
}

fn scalar(v: &Value) -> Option<ContextValue<'_>> {
    match v {
        Value::String(s) => Some(ContextValue::Str(s)),
        Value::Number(n) => Some(ContextValue::Number(n)),
        Value::Bool(b) => Some(ContextValue::Bool(*b)),
        _ => None,
    }
}

impl Context for Map<String, Value> {
    fn get(&self, key: &str) -> Option<ContextValue<'_>> {
        Map::get(self, key).and_then(scalar)
    }
}

impl Context for Value {
    fn get(&self, key: &str) -> Option<ContextValue<'_>> {
        self.as_object().and_then(|m| Map::get(m, key)).and_then(scalar)
    }
}

impl Context for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<ContextValue<'_>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| ContextValue::Str(v))
    }
}

/// A small text buffer on the stack, for numbers.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl StackText {
    fn new() -> StackText {
        StackText { buf: [0; 64], len: 0 }
    }
    fn as_str(&self) -> &str {
        // only whole `&str`s are ever copied in
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// An attribute name with its alternative spelling (`user_id`/`userId` ...).
#[derive(Debug, Clone, PartialEq)]
struct Attr {
    name: String,
    alias: Option<&'static str>,
}

impl Attr {
    fn new(name: &str) -> Attr {
        let alias = match name {
            "user_id" => Some("userId"),
            "userId" => Some("user_id"),
            "session_id" => Some("sessionId"),
            "sessionId" => Some("session_id"),
            "remote_address" => Some("remoteAddress"),
            "remoteAddress" => Some("remote_address"),
            _ => None,
        };
        Attr { name: name.to_string(), alias }
    }

    #[inline]
    fn get<'c, C: Context + ?Sized>(&self, ctx: &'c C) -> Option<ContextValue<'c>> {
        match ctx.get(&self.name) {
            Some(v) => Some(v),
            None => self.alias.and_then(|a| ctx.get(a)),
        }
    }
}

/// `user_id`, `session_id`, `remote_address`, each in both spellings.
fn default_stickiness_value<'c, C: Context + ?Sized>(ctx: &'c C, with_address: bool) -> Option<ContextValue<'c>> {
    let names: &[(&str, &str)] = if with_address {
        &[("user_id", "userId"), ("session_id", "sessionId"), ("remote_address", "remoteAddress")]
    } else {
        &[("user_id", "userId"), ("session_id", "sessionId")]
    };
    for (a, b) in names {
        if let Some(v) = ctx.get(a).or_else(|| ctx.get(b)) {
            if v != ContextValue::Str("") {
                return Some(v);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// hashing

/// Unleash's `normalizedValue`: `murmur3("<group_id>:<id>", seed) % normalizer + 1`, over the
/// UTF-8 bytes. `normalizer` must be positive.
pub fn normalized_value(id: &str, group_id: &str, normalizer: u32, seed: u32) -> u32 {
    let mut prefix = Vec::with_capacity(group_id.len() + 1);
    prefix.extend_from_slice(group_id.as_bytes());
    prefix.push(b':');
    hash_key(&prefix, id, seed) % normalizer + 1
}

/// murmur3 of `prefix ++ value`, through a stack buffer when it fits.
#[inline]
fn hash_key(prefix: &[u8], value: &str, seed: u32) -> u32 {
    const N: usize = 128;
    let total = prefix.len() + value.len();
    if total <= N {
        let mut buf = [0u8; N];
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()..total].copy_from_slice(value.as_bytes());
        murmur3_32(&buf[..total], seed)
    } else {
        let mut buf = Vec::with_capacity(total);
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(value.as_bytes());
        murmur3_32(&buf, seed)
    }
}

// ---------------------------------------------------------------------------------------------
// semver

/// A SemVer 2.0 version; `pre` is the pre-release (empty for a release); build metadata is
/// checked and dropped, as precedence ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Semver<'a> {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: &'a str,
}

fn numeric_identifier(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn valid_identifiers(s: &str, pre_release: bool) -> bool {
    !s.is_empty()
        && s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(pre_release && id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
        })
}

impl<'a> Semver<'a> {
    /// Strict SemVer 2.0: `MAJOR.MINOR.PATCH[-pre][+build]`, no leading `v`, no leading zeros.
    pub fn parse(s: &'a str) -> Option<Semver<'a>> {
        let without_build = match s.find('+') {
            Some(i) => {
                if !valid_identifiers(&s[i + 1..], false) {
                    return None;
                }
                &s[..i]
            }
            None => s,
        };
        let (core, pre) = match without_build.find('-') {
            Some(i) => {
                let pre = &without_build[i + 1..];
                if !valid_identifiers(pre, true) {
                    return None;
                }
                (&without_build[..i], pre)
            }
            None => (without_build, ""),
        };
        let mut parts = core.split('.');
        let major = numeric_identifier(parts.next()?)?;
        let minor = numeric_identifier(parts.next()?)?;
        let patch = numeric_identifier(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(Semver { major, minor, patch, pre })
    }

    /// SemVer 2.0 precedence (section 11).
    pub fn precedence(&self, other: &Semver<'_>) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch)).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let mut a = self.pre.split('.');
                    let mut b = other.pre.split('.');
                    loop {
                        match (a.next(), b.next()) {
                            (None, None) => return Ordering::Equal,
                            (None, Some(_)) => return Ordering::Less,
                            (Some(_), None) => return Ordering::Greater,
                            (Some(x), Some(y)) => {
                                let o = compare_identifier(x, y);
                                if o != Ordering::Equal {
                                    return o;
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

fn compare_identifier(x: &str, y: &str) -> Ordering {
    let xn = x.bytes().all(|b| b.is_ascii_digit());
    let yn = y.bytes().all(|b| b.is_ascii_digit());
    match (xn, yn) {
        // no leading zeros, so the longer number is the larger
        (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

/// A parsed version that owns its pre-release.
#[derive(Debug, Clone, PartialEq)]
struct OwnedSemver {
    major: u64,
    minor: u64,
    patch: u64,
    pre: String,
}

impl OwnedSemver {
    fn view(&self) -> Semver<'_> {
        Semver { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

// ---------------------------------------------------------------------------------------------
// operators

/// Constraint operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    In,
    NotIn,
    Eq,
    Neq,
    StrContains,
    StrStartsWith,
    StrEndsWith,
    NumEq,
    NumGt,
    NumGte,
    NumLt,
    NumLte,
    SemverEq,
    SemverGt,
    SemverGte,
    SemverLt,
    SemverLte,
}

impl Op {
    pub const ALL: [Op; 17] = [
        Op::In,
        Op::NotIn,
        Op::Eq,
        Op::Neq,
        Op::StrContains,
        Op::StrStartsWith,
        Op::StrEndsWith,
        Op::NumEq,
        Op::NumGt,
        Op::NumGte,
        Op::NumLt,
        Op::NumLte,
        Op::SemverEq,
        Op::SemverGt,
        Op::SemverGte,
        Op::SemverLt,
        Op::SemverLte,
    ];

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::StrContains => "str_contains",
            Op::StrStartsWith => "str_starts_with",
            Op::StrEndsWith => "str_ends_with",
            Op::NumEq => "num_eq",
            Op::NumGt => "num_gt",
            Op::NumGte => "num_gte",
            Op::NumLt => "num_lt",
            Op::NumLte => "num_lte",
            Op::SemverEq => "semver_eq",
            Op::SemverGt => "semver_gt",
            Op::SemverGte => "semver_gte",
            Op::SemverLt => "semver_lt",
            Op::SemverLte => "semver_lte",
        }
    }

    fn comparison(self) -> Cmp {
        match self {
            Op::NumGt | Op::SemverGt => Cmp::Gt,
            Op::NumGte | Op::SemverGte => Cmp::Gte,
            Op::NumLt | Op::SemverLt => Cmp::Lt,
            Op::NumLte | Op::SemverLte => Cmp::Lte,
            _ => Cmp::Eq,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    #[inline]
    fn holds(self, o: Ordering) -> bool {
        match self {
            Cmp::Eq => o == Ordering::Equal,
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Gte => o != Ordering::Less,
            Cmp::Lt => o == Ordering::Less,
            Cmp::Lte => o != Ordering::Greater,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StrKind {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// Sorted and deduplicated for a binary search, or lower-cased for a scan.
    Member { values: Vec<String>, case_insensitive: bool },
    Text { kind: StrKind, values: Vec<String>, case_insensitive: bool },
    Num { cmp: Cmp, value: f64 },
    Semver { cmp: Cmp, value: OwnedSemver },
}

/// A validated constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    op: Op,
    attr: Attr,
    test: Test,
    /// `not_in` and `neq`: negate the membership (so that a missing attribute is not in).
    negate: bool,
    inverted: bool,
}

fn ascii_lower_text_test(kind: StrKind, hay: &[u8], needle: &[u8]) -> bool {
    if needle.len() > hay.len() {
        return false;
    }
    match kind {
        StrKind::StartsWith => hay[..needle.len()].eq_ignore_ascii_case(needle),
        StrKind::EndsWith => hay[hay.len() - needle.len()..].eq_ignore_ascii_case(needle),
        StrKind::Contains => hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle)),
    }
}

fn text_test(kind: StrKind, hay: &str, needle: &str) -> bool {
    match kind {
        StrKind::StartsWith => hay.starts_with(needle),
        StrKind::EndsWith => hay.ends_with(needle),
        StrKind::Contains => hay.contains(needle),
    }
}

impl Constraint {
    pub fn op(&self) -> Op {
        self.op
    }

    pub fn attribute(&self) -> &str {
        &self.attr.name
    }

    /// Does the context satisfy this constraint?
    #[inline]
    pub fn matches<C: Context + ?Sized>(&self, ctx: &C) -> bool {
        let value = self.attr.get(ctx);
        let raw = match &self.test {
            Test::Member { values, case_insensitive } => {
                let found = value.is_some_and(|v| {
                    v.with_text(|s| {
                        if !case_insensitive {
                            if values.len() <= 8 {
                                values.iter().any(|x| x == s)
                            } else {
                                values.binary_search_by(|x| x.as_str().cmp(s)).is_ok()
                            }
                        } else if s.is_ascii() {
                            values.iter().any(|x| s.as_bytes().eq_ignore_ascii_case(x.as_bytes()))
                        } else {
                            let lower = s.to_lowercase();
                            values.iter().any(|x| *x == lower)
                        }
                    })
                });
                found != self.negate
            }
            Test::Text { kind, values, case_insensitive } => value.is_some_and(|v| {
                v.with_text(|s| {
                    if !case_insensitive {
                        values.iter().any(|x| text_test(*kind, s, x))
                    } else if s.is_ascii() {
                        // the Unicode lower case of ASCII is its ASCII lower case; a non-ASCII
                        // needle cannot match ASCII text
                        values.iter().any(|x| ascii_lower_text_test(*kind, s.as_bytes(), x.as_bytes()))
                    } else {
                        let lower = s.to_lowercase();
                        values.iter().any(|x| text_test(*kind, &lower, x))
                    }
                })
            }),
            Test::Num { cmp, value: rhs } => value
                .and_then(ContextValue::as_f64)
                .and_then(|x| x.partial_cmp(rhs))
                .is_some_and(|o| cmp.holds(o)),
            Test::Semver { cmp, value: rhs } => value.is_some_and(|v| match v {
                ContextValue::Str(s) => Semver::parse(s).is_some_and(|x| cmp.holds(x.precedence(&rhs.view()))),
                _ => false,
            }),
        };
        raw != self.inverted
    }
}

// ---------------------------------------------------------------------------------------------
// rollouts and variants

#[derive(Debug, Clone, PartialEq)]
enum Stickiness {
    Default,
    Attr(Attr),
}

impl Stickiness {
    fn name(&self) -> &str {
        match self {
            Stickiness::Default => "default",
            Stickiness::Attr(a) => &a.name,
        }
    }
}

/// A validated percentage rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    percentage: u32,
    stickiness: Stickiness,
    group_id: String,
    /// `"<group_id>:"`
    prefix: Vec<u8>,
}

impl Rollout {
    pub fn percentage(&self) -> u32 {
        self.percentage
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn stickiness(&self) -> &str {
        self.stickiness.name()
    }

    /// Is the context inside the rollout?
    #[inline]
    pub fn includes<C: Context + ?Sized>(&self, ctx: &C) -> bool {
        if self.percentage == 0 {
            return false;
        }
        let value = match &self.stickiness {
            Stickiness::Default => default_stickiness_value(ctx, false),
            Stickiness::Attr(a) => a.get(ctx),
        };
        match value {
            Some(v) => v.with_text(|s| hash_key(&self.prefix, s, ROLLOUT_SEED) % 100 + 1 <= self.percentage),
            // Unleash draws a random value here, which is always inside a 100 % rollout
            None => self.percentage == 100 && self.stickiness == Stickiness::Default,
        }
    }
}

/// A validated variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
    pub payload: Option<Value>,
    overrides: Vec<(Attr, Vec<String>)>,
}

/// A validated, non-empty list of variants with its group id and stickiness.
#[derive(Debug, Clone, PartialEq)]
pub struct Variants {
    variants: Vec<Variant>,
    total_weight: u32,
    stickiness: Stickiness,
    prefix: Vec<u8>,
    /// The only variant with a positive weight, if there is exactly one.
    sole: Option<usize>,
    has_overrides: bool,
}

enum Pick {
    Override(usize),
    Hashed(usize),
    Sole(usize),
    None,
}

impl Variants {
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    fn pick<C: Context + ?Sized>(&self, ctx: &C) -> Pick {
        if self.has_overrides {
            for (i, v) in self.variants.iter().enumerate() {
                let hit = v.overrides.iter().any(|(attr, values)| {
                    attr.get(ctx).is_some_and(|x| x.with_text(|s| values.iter().any(|y| y == s)))
                });
                if hit {
                    return Pick::Override(i);
                }
            }
        }
        if let Some(i) = self.sole {
            return Pick::Sole(i);
        }
        let value = match &self.stickiness {
            Stickiness::Default => default_stickiness_value(ctx, true),
            Stickiness::Attr(a) => a.get(ctx),
        };
        let Some(value) = value else { return Pick::None };
        let target = value.with_text(|s| hash_key(&self.prefix, s, VARIANT_SEED)) % self.total_weight + 1;
        let mut sum = 0u32;
        for (i, v) in self.variants.iter().enumerate() {
            if v.weight == 0 {
                continue;
            }
            sum += v.weight;
            if sum >= target {
                return Pick::Hashed(i);
            }
        }
        Pick::None
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Option<String>,
    constraints: Vec<Constraint>,
    rollout: Option<Rollout>,
    variants: Option<Variants>,
}

impl Rule {
    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }
    pub fn variants(&self) -> Option<&Variants> {
        self.variants.as_ref()
    }
}

// ---------------------------------------------------------------------------------------------
// the compiled flag

/// A flag parsed, validated and ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFlag {
    key: String,
    description: Option<String>,
    environments: [bool; 3],
    kill_switch: bool,
    rules: Vec<Rule>,
    variants: Option<Variants>,
}

impl CompiledFlag {
    /// Parses and validates `definition` (see the module documentation) for the flag `key`.
    pub fn compile(key: &str, definition: &Value) -> Result<CompiledFlag, FlagError> {
        if key.is_empty() {
            return Err(FlagError::EmptyKey);
        }
        let at = "flag";
        let obj = object(definition, at)?;
        check_keys(obj, at, &["description", "environments", "kill_switch", "rules", "variants"])?;
        let description = opt_string(obj, at, "description")?.map(str::to_string);
        let envs = obj.get("environments").ok_or(FlagError::MissingKey { at: at.into(), key: "environments" })?;
        let envs = envs.as_object().ok_or(FlagError::WrongType {
            at: at.into(),
            key: "environments",
            expected: "an object of environment names to booleans",
        })?;
        let mut environments = [false; 3];
        for (name, on) in envs {
            let env = Environment::parse(name)?;
            environments[env.index()] = on.as_bool().ok_or(FlagError::WrongType {
                at: format!("flag environment \"{name}\""),
                key: "enabled",
                expected: "a boolean",
            })?;
        }
        let kill_switch = opt_bool(obj, at, "kill_switch")?.unwrap_or(false);
        let mut rules = Vec::new();
        if let Some(list) = opt_array(obj, at, "rules")? {
            for (i, r) in list.iter().enumerate() {
                rules.push(compile_rule(key, r, &format!("rule {}", i + 1))?);
            }
        }
        let variants = match opt_array(obj, at, "variants")? {
            Some(list) => compile_variants(list, "flag", key, None)?,
            None => None,
        };
        Ok(CompiledFlag { key: key.to_string(), description, environments, kill_switch, rules, variants })
    }

    /// [`CompiledFlag::compile`] from JSON text; text that is not JSON is a `NotAnObject`.
    pub fn compile_str(key: &str, definition: &str) -> Result<CompiledFlag, FlagError> {
        let v: Value = serde_json::from_str(definition).map_err(|_| FlagError::NotAnObject { at: "flag".into() })?;
        CompiledFlag::compile(key, &v)
    }

    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    pub fn kill_switch(&self) -> bool {
        self.kill_switch
    }
    pub fn enabled_in(&self, env: Environment) -> bool {
        self.environments[env.index()]
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn variants(&self) -> Option<&Variants> {
        self.variants.as_ref()
    }

    /// Evaluates the flag in `env` for `ctx` (see the module documentation). Does not allocate,
    /// except for case-insensitive tests on non-ASCII text and stickiness keys over 128 bytes.
    pub fn evaluate<'f, C: Context + ?Sized>(&'f self, env: Environment, ctx: &C) -> Evaluation<'f> {
        if self.kill_switch || !self.environments[env.index()] {
            return Evaluation::off(Reason::Disabled);
        }
        if self.rules.is_empty() {
            return self.on(Reason::Static, None, self.variants.as_ref(), ctx);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.constraints.iter().all(|c| c.matches(ctx)) {
                continue;
            }
            let reason = match &rule.rollout {
                Some(r) if !r.includes(ctx) => continue,
                Some(_) => Reason::Split,
                None => Reason::TargetingMatch,
            };
            return self.on(reason, Some(i), rule.variants.as_ref().or(self.variants.as_ref()), ctx);
        }
        Evaluation::off(Reason::Default)
    }

    fn on<'f, C: Context + ?Sized>(
        &'f self,
        reason: Reason,
        rule: Option<usize>,
        variants: Option<&'f Variants>,
        ctx: &C,
    ) -> Evaluation<'f> {
        let mut ev = Evaluation { value: true, variant: None, payload: None, reason, error_code: None, rule };
        let Some(set) = variants else { return ev };
        let index = match set.pick(ctx) {
            Pick::Override(i) => {
                if ev.reason == Reason::Static {
                    ev.reason = Reason::TargetingMatch;
                }
                i
            }
            Pick::Hashed(i) => {
                ev.reason = Reason::Split;
                i
            }
            Pick::Sole(i) => i,
            Pick::None => return ev,
        };
        let v = &set.variants[index];
        ev.variant = Some(&v.name);
        ev.payload = v.payload.as_ref();
        ev
    }
}

/// Checks a definition without keeping the result.
pub fn validate(key: &str, definition: &Value) -> Result<(), FlagError> {
    CompiledFlag::compile(key, definition).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// compilation helpers

fn object<'v>(v: &'v Value, at: &str) -> Result<&'v Map<String, Value>, FlagError> {
    v.as_object().ok_or_else(|| FlagError::NotAnObject { at: at.to_string() })
}

fn check_keys(obj: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), FlagError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(FlagError::UnknownKey { at: at.to_string(), key: k.clone() }),
        None => Ok(()),
    }
}

fn opt_string<'v>(obj: &'v Map<String, Value>, at: &str, key: &'static str) -> Result<Option<&'v str>, FlagError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "a string" }),
    }
}

fn non_empty_string<'v>(obj: &'v Map<String, Value>, at: &str, key: &'static str) -> Result<Option<&'v str>, FlagError> {
    match opt_string(obj, at, key) {
        Ok(Some("")) | Err(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "a non-empty string" }),
        other => other,
    }
}

fn opt_bool(obj: &Map<String, Value>, at: &str, key: &'static str) -> Result<Option<bool>, FlagError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "a boolean" }),
    }
}

fn opt_array<'v>(obj: &'v Map<String, Value>, at: &str, key: &'static str) -> Result<Option<&'v Vec<Value>>, FlagError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "an array" }),
    }
}

/// A scalar's text, as a context value of the same JSON would be spelled.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_list(obj: &Map<String, Value>, at: &str, key: &'static str) -> Result<Vec<String>, FlagError> {
    const EXPECTED: &str = "an array of strings, numbers or booleans";
    let list = obj.get(key).ok_or(FlagError::MissingKey { at: at.to_string(), key })?;
    let list = list.as_array().ok_or(FlagError::WrongType { at: at.to_string(), key, expected: EXPECTED })?;
    list.iter()
        .map(|v| scalar_text(v).ok_or(FlagError::WrongType { at: at.to_string(), key, expected: EXPECTED }))
        .collect()
}

fn stickiness(obj: &Map<String, Value>, at: &str) -> Result<Option<Stickiness>, FlagError> {
    match non_empty_string(obj, at, "stickiness")? {
        None => Ok(None),
        Some("default") => Ok(Some(Stickiness::Default)),
        Some("random") => Err(FlagError::RandomStickiness { at: at.to_string() }),
        Some(a) => Ok(Some(Stickiness::Attr(Attr::new(a)))),
    }
}

fn compile_rule(flag_key: &str, v: &Value, at: &str) -> Result<Rule, FlagError> {
    let obj = object(v, at)?;
    check_keys(obj, at, &["name", "constraints", "rollout", "variants"])?;
    let name = opt_string(obj, at, "name")?.map(str::to_string);
    let mut constraints = Vec::new();
    if let Some(list) = opt_array(obj, at, "constraints")? {
        for (i, c) in list.iter().enumerate() {
            constraints.push(compile_constraint(c, &format!("{at} constraint {}", i + 1))?);
        }
    }
    let rollout = match obj.get("rollout") {
        None => None,
        Some(r) => Some(compile_rollout(flag_key, r, &format!("{at} rollout"))?),
    };
    let variants = match opt_array(obj, at, "variants")? {
        Some(list) => {
            let group = rollout.as_ref().map_or(flag_key, |r| r.group_id.as_str());
            compile_variants(list, at, group, rollout.as_ref().map(|r| &r.stickiness))?
        }
        None => None,
    };
    Ok(Rule { name, constraints, rollout, variants })
}

fn compile_constraint(v: &Value, at: &str) -> Result<Constraint, FlagError> {
    let obj = object(v, at)?;
    check_keys(obj, at, &["attribute", "op", "value", "values", "inverted", "case_insensitive"])?;
    let attribute = non_empty_string(obj, at, "attribute")?.ok_or(FlagError::MissingKey { at: at.into(), key: "attribute" })?;
    let op_name = opt_string(obj, at, "op")?.ok_or(FlagError::MissingKey { at: at.into(), key: "op" })?;
    let op = Op::parse(op_name).ok_or_else(|| FlagError::UnknownOp { at: at.into(), op: op_name.to_string() })?;
    let inverted = opt_bool(obj, at, "inverted")?.unwrap_or(false);
    let case_insensitive = opt_bool(obj, at, "case_insensitive")?.unwrap_or(false);

    let takes_list = matches!(op, Op::In | Op::NotIn | Op::StrContains | Op::StrStartsWith | Op::StrEndsWith);
    let (wanted, other) = if takes_list { ("values", "value") } else { ("value", "values") };
    if obj.contains_key(other) {
        return Err(FlagError::WrongValueKey { at: at.into(), op: op.name(), wanted, given: other });
    }
    if !obj.contains_key(wanted) {
        return Err(FlagError::MissingKey { at: at.into(), key: wanted });
    }
    let textual = matches!(op, Op::In | Op::NotIn | Op::Eq | Op::Neq | Op::StrContains | Op::StrStartsWith | Op::StrEndsWith);
    if case_insensitive && !textual {
        return Err(FlagError::CaseInsensitiveNotApplicable { at: at.into(), op: op.name() });
    }
    let lower = |mut values: Vec<String>| {
        if case_insensitive {
            values.iter_mut().for_each(|s| *s = s.to_lowercase());
        }
        values
    };
    let test = match op {
        Op::In | Op::NotIn | Op::Eq | Op::Neq => {
            let values = if takes_list {
                text_list(obj, at, "values")?
            } else {
                vec![scalar_text(&obj["value"]).ok_or(FlagError::WrongType {
                    at: at.into(),
                    key: "value",
                    expected: "a string, number or boolean",
                })?]
            };
            let mut values = lower(values);
            if !case_insensitive {
                values.sort();
                values.dedup();
            }
            Test::Member { values, case_insensitive }
        }
        Op::StrContains | Op::StrStartsWith | Op::StrEndsWith => {
            let values = lower(text_list(obj, at, "values")?);
            if values.is_empty() {
                return Err(FlagError::EmptyValues { at: at.into(), op: op.name() });
            }
            if values.iter().any(String::is_empty) {
                return Err(FlagError::EmptyValue { at: at.into(), op: op.name() });
            }
            let kind = match op {
                Op::StrContains => StrKind::Contains,
                Op::StrStartsWith => StrKind::StartsWith,
                _ => StrKind::EndsWith,
            };
            Test::Text { kind, values, case_insensitive }
        }
        Op::NumEq | Op::NumGt | Op::NumGte | Op::NumLt | Op::NumLte => {
            let value = obj["value"]
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or(FlagError::NotANumber { at: at.into(), op: op.name() })?;
            Test::Num { cmp: op.comparison(), value }
        }
        Op::SemverEq | Op::SemverGt | Op::SemverGte | Op::SemverLt | Op::SemverLte => {
            let text = match &obj["value"] {
                Value::String(s) => s.as_str(),
                _ => return Err(FlagError::WrongType { at: at.into(), key: "value", expected: "a semver string" }),
            };
            let s = Semver::parse(text).ok_or_else(|| FlagError::InvalidSemver {
                at: at.into(),
                op: op.name(),
                value: text.to_string(),
            })?;
            let value = OwnedSemver { major: s.major, minor: s.minor, patch: s.patch, pre: s.pre.to_string() };
            Test::Semver { cmp: op.comparison(), value }
        }
    };
    Ok(Constraint { op, attr: Attr::new(attribute), test, negate: matches!(op, Op::NotIn | Op::Neq), inverted })
}

fn compile_rollout(flag_key: &str, v: &Value, at: &str) -> Result<Rollout, FlagError> {
    let obj = object(v, at)?;
    check_keys(obj, at, &["percentage", "stickiness", "group_id"])?;
    let p = obj.get("percentage").ok_or(FlagError::MissingKey { at: at.into(), key: "percentage" })?;
    let percentage = match p.as_u64() {
        Some(x) if x <= 100 => x as u32,
        _ if p.is_number() => return Err(FlagError::Percentage { at: at.into(), value: p.to_string() }),
        _ => return Err(FlagError::WrongType { at: at.into(), key: "percentage", expected: "an integer in 0..100" }),
    };
    let stickiness = stickiness(obj, at)?.unwrap_or(Stickiness::Default);
    let group_id = non_empty_string(obj, at, "group_id")?.unwrap_or(flag_key).to_string();
    let mut prefix = group_id.as_bytes().to_vec();
    prefix.push(b':');
    Ok(Rollout { percentage, stickiness, group_id, prefix })
}

/// `owner` is `flag` or `rule N`; `None` for an empty list.
fn compile_variants(
    list: &[Value],
    owner: &str,
    group_id: &str,
    inherited: Option<&Stickiness>,
) -> Result<Option<Variants>, FlagError> {
    if list.is_empty() {
        return Ok(None);
    }
    if list.len() > MAX_VARIANTS {
        return Err(FlagError::TooManyVariants { at: owner.to_string() });
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(list.len());
    let mut stickinesses = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let at = format!("{owner} variant {}", i + 1);
        let obj = object(v, &at)?;
        check_keys(obj, &at, &["name", "weight", "payload", "stickiness", "overrides"])?;
        let name = non_empty_string(obj, &at, "name")?.ok_or(FlagError::MissingKey { at: at.clone(), key: "name" })?;
        if variants.iter().any(|x| x.name == name) {
            return Err(FlagError::DuplicateVariant { at: owner.to_string(), name: name.to_string() });
        }
        let w = obj.get("weight").ok_or(FlagError::MissingKey { at: at.clone(), key: "weight" })?;
        let weight = match w.as_u64() {
            Some(x) if x <= MAX_WEIGHT => x as u32,
            _ => return Err(FlagError::Weight { at, value: w.to_string() }),
        };
        stickinesses.push(stickiness(obj, &at)?);
        let mut overrides = Vec::new();
        if let Some(os) = opt_array(obj, &at, "overrides")? {
            for (j, o) in os.iter().enumerate() {
                let oat = format!("{at} override {}", j + 1);
                let oobj = object(o, &oat)?;
                check_keys(oobj, &oat, &["attribute", "values"])?;
                let attr = non_empty_string(oobj, &oat, "attribute")?
                    .ok_or(FlagError::MissingKey { at: oat.clone(), key: "attribute" })?;
                overrides.push((Attr::new(attr), text_list(oobj, &oat, "values")?));
            }
        }
        variants.push(Variant { name: name.to_string(), weight, payload: obj.get("payload").cloned(), overrides });
    }
    let total: u64 = variants.iter().map(|v| v.weight as u64).sum();
    if total == 0 {
        return Err(FlagError::ZeroTotalWeight { at: owner.to_string() });
    }
    let first = stickinesses[0].clone();
    if stickinesses.iter().any(|s| *s != first) {
        return Err(FlagError::MixedStickiness { at: owner.to_string() });
    }
    let stickiness = first.or_else(|| inherited.cloned()).unwrap_or(Stickiness::Default);
    let positive: Vec<usize> = (0..variants.len()).filter(|&i| variants[i].weight > 0).collect();
    let sole = (positive.len() == 1).then(|| positive[0]);
    let has_overrides = variants.iter().any(|v| !v.overrides.is_empty());
    let mut prefix = group_id.as_bytes().to_vec();
    prefix.push(b':');
    Ok(Some(Variants { variants, total_weight: total as u32, stickiness, prefix, sole, has_overrides }))
}

// ---------------------------------------------------------------------------------------------
// measurement

/// The flag that [`bench_evaluations`] evaluates: one `in` constraint on `role` and a 25 %
/// rollout on `user_id`.
pub fn bench_definition() -> Value {
    serde_json::json!({
        "environments": {"production": true},
        "rules": [{
            "constraints": [{"attribute": "role", "op": "in", "values": ["desk", "admin"]}],
            "rollout": {"percentage": 25, "stickiness": "user_id"}
        }]
    })
}

/// The `i`-th of the 1024 contexts [`bench_evaluations`] cycles through.
pub fn bench_context(i: u64) -> Map<String, Value> {
    const ROLES: [&str; 4] = ["desk", "admin", "viewer", "desk"];
    let mut m = Map::new();
    m.insert("user_id".into(), Value::String(format!("user-{}", i % 1024)));
    m.insert("role".into(), Value::String(ROLES[(i % 4) as usize].into()));
    m.insert("strategy".into(), Value::String("momentum".into()));
    m
}

/// Evaluates the [`bench_definition`] flag (key `bench.flag`, production) `n` times over 1024
/// prepared JSON contexts; returns how many evaluations were on and the time the loop took
/// (compilation and context preparation are not timed).
pub fn bench_evaluations(n: u64) -> (u64, Duration) {
    let flag = CompiledFlag::compile("bench.flag", &bench_definition()).expect("the bench flag is valid");
    let contexts: Vec<Map<String, Value>> = (0..1024).map(bench_context).collect();
    let start = Instant::now();
    let mut enabled = 0u64;
    for i in 0..n {
        let ctx = std::hint::black_box(&contexts[(i % 1024) as usize]);
        if std::hint::black_box(&flag).evaluate(Environment::Production, ctx).value {
            enabled += 1;
        }
    }
    (enabled, start.elapsed())
}
