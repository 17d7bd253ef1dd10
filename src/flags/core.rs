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
//! string that parses as a finite number (`"12.0"`). The SQL shell hands numbers over as
//! PostgreSQL normalises them (`20` for `20.0`, as JavaScript prints it), for every function.
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
        let envs_type = || FlagError::WrongType {
            at: at.into(),
            key: "environments",
            expected: "an object of environment names to booleans",
        };
        let envs = envs.as_object().ok_or_else(envs_type)?;
        let mut environments = [false; 3];
        for (name, on) in envs {
            let env = Environment::parse(name)?;
            environments[env.index()] = on.as_bool().ok_or_else(envs_type)?;
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

    /// [`CompiledFlag::compile`] from JSON text.
    pub fn compile_str(key: &str, definition: &str) -> Result<CompiledFlag, FlagError> {
        let v: Value = serde_json::from_str(definition).map_err(|e| FlagError::InvalidJson { message: e.to_string() })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PROD: Environment = Environment::Production;

    fn compile(key: &str, def: Value) -> CompiledFlag {
        CompiledFlag::compile(key, &def).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    /// A flag on in production with these rules.
    fn rules(key: &str, rules: Value) -> CompiledFlag {
        compile(key, json!({"environments": {"production": true}, "rules": rules}))
    }

    /// One rule with one constraint.
    fn constraint(c: Value) -> CompiledFlag {
        rules("f", json!([{"constraints": [c]}]))
    }

    fn error(def: Value) -> String {
        CompiledFlag::compile("f", &def).expect_err("must be rejected").to_string()
    }

    fn rule_error(rule: Value) -> String {
        error(json!({"environments": {"production": true}, "rules": [rule]}))
    }

    /// Unleash test cases: (description, context, expected), against `flag`.
    fn check(file: &str, flag: &CompiledFlag, cases: &[(&str, Value, bool)]) {
        for (description, context, expected) in cases {
            let got = flag.evaluate(PROD, context).value;
            assert_eq!(got, *expected, "{file}: {description} (context {context})");
        }
    }

    /// Unleash variant cases: (description, context, expected variant name or None).
    fn check_variants(file: &str, flag: &CompiledFlag, cases: &[(&str, Value, Option<&str>)]) {
        for (description, context, expected) in cases {
            let ev = flag.evaluate(PROD, context);
            assert_eq!(ev.variant, *expected, "{file}: {description} (context {context})");
        }
    }

    // -- bucketing ---------------------------------------------------------------------------

    #[test]
    fn normalized_value_matches_unleash_clients() {
        // unleash-client-node src/test/strategy/util.test.ts: "normalized values are the same
        // across node, java, and go clients"
        assert_eq!(normalized_value("123", "gr1", 100, ROLLOUT_SEED), 73);
        assert_eq!(normalized_value("999", "groupX", 100, ROLLOUT_SEED), 25);
    }

    #[test]
    fn normalized_values_behind_the_spec_rollout_cases() {
        // the buckets the client-specification's rollout cases rely on, as (group, id, bound, in)
        let cases: &[(&str, &str, u32, bool)] = &[
            // 03-gradual-rollout-user-id-strategy, Feature.B3 (50 %, groupId AB12A)
            ("AB12A", "122", 50, true),
            ("AB12A", "155", 50, false),
            // 10-flexible-rollout-strategy
            ("Feature.flexibleRollout.10", "174", 10, true),
            ("Feature.flexibleRollout.10", "499", 10, false),
            ("Feature.flexibleRollout.userId.55", "25", 55, true),
            ("Feature.flexibleRollout.sessionId.42", "147", 42, true),
            // 12-custom-stickiness
            ("Feature.flexible.rollout.custom.stickiness_50", "402", 50, false),
            ("Feature.flexible.rollout.custom.stickiness_50", "388", 50, true),
            ("Feature.flexible.rollout.custom.stickiness_50", "39", 50, true),
        ];
        for (group, id, bound, inside) in cases {
            let v = normalized_value(id, group, 100, ROLLOUT_SEED);
            assert!((1..=100).contains(&v));
            assert_eq!(v <= *bound, *inside, "{group}:{id} -> {v}");
        }
    }

    #[test]
    fn spec_03_gradual_rollout_user_id() {
        let f = "03-gradual-rollout-user-id-strategy.json";
        let r = |p: u32| json!({"rollout": {"percentage": p, "stickiness": "user_id", "group_id": "AB12A"}});
        check(f, &rules("Feature.A3", json!([r(100)])), &[
            ("Feature.A3 should be enabled for user on context", json!({"userId": "123"}), true),
            ("Feature.A3 should be disabled when no user on context", json!({}), false),
        ]);
        check(f, &rules("Feature.B3", json!([r(50)])), &[
            ("Feature.B3 should be enabled for userId=122", json!({"userId": "122"}), true),
            ("Feature.B3 should be disabled for userId=155", json!({"userId": "155"}), false),
        ]);
        check(f, &rules("Feature.C3", json!([r(0)])), &[("Feature.C3 should be disabled", json!({"userId": "122"}), false)]);
        check(f, &rules("Feature.D3", json!([r(0), {}])), &[(
            "Feature.D3 should be enabled for all because of default strategy",
            json!({}),
            true,
        )]);
    }

    #[test]
    fn spec_04_gradual_rollout_session_id() {
        let f = "04-gradual-rollout-session-id-strategy.json";
        let r = |p: u32| json!({"rollout": {"percentage": p, "stickiness": "session_id", "group_id": "AB12A"}});
        check(f, &rules("Feature.A4", json!([r(100)])), &[
            ("Feature.A4 should be enabled for user on context", json!({"sessionId": "123"}), true),
            ("Feature.A4 should be disabled when no user on context", json!({}), false),
        ]);
        check(f, &rules("Feature.B4", json!([r(50)])), &[
            ("Feature.B4 should be enabled for sessionId=122", json!({"sessionId": "122"}), true),
            ("Feature.B4 should be disabled for sessionId=155", json!({"sessionId": "155"}), false),
        ]);
        check(f, &rules("Feature.C4", json!([r(0)])), &[("Feature.C4 should be disabled", json!({"sessionId": "122"}), false)]);
        check(f, &rules("Feature.D4", json!([r(0), {}])), &[(
            "Feature.D4 should be enabled for all because of default strategy",
            json!({}),
            true,
        )]);
    }

    #[test]
    fn spec_07_multiple_strategies() {
        let f = "07-multiple-strategies.json";
        let zero = json!({"rollout": {"percentage": 0}});
        let user_123 = json!({"constraints": [{"attribute": "user_id", "op": "in", "values": ["123"]}]});
        check(f, &rules("Feature.multiStrategies.A", json!([zero, {}])), &[(
            "Feature.multiStrategies.A should be enabled",
            json!({}),
            true,
        )]);
        check(f, &rules("Feature.multiStrategies.B", json!([zero, user_123])), &[
            ("Feature.multiStrategies.B disabled for unknonw user", json!({}), false),
            ("Feature.multiStrategies.B enabled for user=123", json!({"userId": "123"}), true),
        ]);
        check(f, &rules("Feature.multiStrategies.C", json!([zero, user_123, zero])), &[
            ("Feature.multiStrategies.C disabled for unknown users", json!({}), false),
            ("Feature.multiStrategies.C disabled for user=22", json!({"userId": "22"}), false),
            ("Feature.multiStrategies.C enabled for user=123", json!({"userId": "123"}), true),
        ]);
    }

    #[test]
    fn spec_10_flexible_rollout() {
        let f = "10-flexible-rollout-strategy.json";
        let flex = |key: &str, p: u32, s: &str| {
            rules(key, json!([{"rollout": {"percentage": p, "stickiness": s, "group_id": key}}]))
        };
        check(f, &flex("Feature.flexibleRollout.100", 100, "default"), &[(
            "Feature.flexibleRollout.100 should always be enabled",
            json!({}),
            true,
        )]);
        check(f, &flex("Feature.flexibleRollout.10", 10, "default"), &[
            ("Feature.flexibleRollout.10 should be enabled for userId=174", json!({"userId": "174"}), true),
            ("Feature.flexibleRollout.10 should be disabled for userId=499", json!({"userId": "499"}), false),
            ("Feature.flexibleRollout.10 should be enabled for sessionId=174", json!({"sessionId": "174"}), true),
            ("Feature.flexibleRollout.10 should be disabled for sessionId=499", json!({"sessionId": "499"}), false),
        ]);
        check(f, &flex("Feature.flexibleRollout.userId.55", 55, "userId"), &[
            ("Feature.flexibleRollout.userId.55 should be enabled for userId=25", json!({"userId": "25"}), true),
            ("Feature.flexibleRollout.userId.55 should be disabled for sessionId=25", json!({"sessionId": "25"}), false),
            ("Feature.flexibleRollout.userId.55 should be disabled if no userId in context", json!({}), false),
        ]);
        check(f, &flex("Feature.flexibleRollout.sessionId.42", 42, "sessionId"), &[(
            "Feature.flexibleRollout.sessionId.42 should be enabled for sessionId=147",
            json!({"sessionId": "147"}),
            true,
        )]);
        check(f, &flex("Feature.flexibleRollout.0", 0, "default"), &[(
            "Feature.flexibleRollout.0 should be disbaled for rollout=0",
            json!({"sessionId": "147", "userId": "12"}),
            false,
        )]);
    }

    #[test]
    fn spec_12_custom_stickiness() {
        let f = "12-custom-stickiness.json";
        // the spec nests customField under "properties"; quantops contexts are flat
        let key50 = "Feature.flexible.rollout.custom.stickiness_50";
        let f50 = rules(key50, json!([{"rollout": {"percentage": 50, "stickiness": "customField", "group_id": key50}}]));
        check(f, &f50, &[
            ("Feature.flexible.rollout.custom.stickiness_50 should not be enabled without custom field", json!({}), false),
            ("Feature.flexible.rollout.custom.stickiness_50 should not enabled for customField=402", json!({"customField": "402"}), false),
            ("Feature.flexible.rollout.custom.stickiness_50 should be enabled for customField=388", json!({"customField": "388"}), true),
            ("Feature.flexible.rollout.custom.stickiness_50 should be enabled for customField=39", json!({"customField": "39"}), true),
        ]);
        let key100 = "Feature.flexible.rollout.custom.stickiness_100";
        let v = |name: &str| json!({"name": name, "weight": 25, "stickiness": "customField", "payload": {"type": "string", "value": "val1"}});
        let f100 = compile(key100, json!({
            "environments": {"production": true},
            "rules": [{"rollout": {"percentage": 100, "stickiness": "customField", "group_id": key100}}],
            "variants": [v("blue"), v("red"), v("green"), v("yellow")]
        }));
        check(f, &f100, &[(
            "Feature.flexible.rollout.custom.stickiness_100 should be enabled without field defined for 100%",
            json!({"customField": "any_value"}),
            true,
        )]);
        check_variants(f, &f100, &[
            ("Feature.flexible.rollout.custom.stickiness_100 and customField=616 yields blue", json!({"customField": "616"}), Some("blue")),
            ("Feature.flexible.rollout.custom.stickiness_100 and customField=503 yields red", json!({"customField": "503"}), Some("red")),
            ("Feature.flexible.rollout.custom.stickiness_100 and customField=438 yields green", json!({"customField": "438"}), Some("green")),
            ("Feature.flexible.rollout.custom.stickiness_100 and customField=44 yields yellow", json!({"customField": "44"}), Some("yellow")),
        ]);
        // a named stickiness attribute that is missing is out even at 100 %, as in Unleash
        assert!(!f100.evaluate(PROD, &json!({})).value);
    }

    fn val(v: &str) -> Value {
        json!({"type": "string", "value": v})
    }

    #[test]
    fn spec_08_variants() {
        let f = "08-variants.json";
        let on = json!({"production": true});
        let variant = |n: u32, w: u32| json!({"name": format!("variant{n}"), "weight": w, "payload": val(&format!("val{n}"))});
        let a = compile("Feature.Variants.A", json!({"environments": on, "rules": [{}], "variants": [variant(1, 1)]}));
        let ev = a.evaluate(PROD, &json!({"userId": "0"}));
        assert_eq!((ev.value, ev.variant, ev.payload), (true, Some("variant1"), Some(&val("val1"))), "{f}: Feature.Variants.A should be enabled");

        let b = compile("Feature.Variants.B", json!({"environments": on, "variants": [variant(1, 1), variant(2, 1)]}));
        check_variants(f, &b, &[
            ("Feature.Variants.B should give variant2 for user 2", json!({"userId": "2"}), Some("variant2")),
            ("Feature.Variants.B should give variant 1 for user 0", json!({"userId": "0"}), Some("variant1")),
        ]);
        let c = compile("Feature.Variants.C", json!({"environments": on, "variants": [variant(1, 33), variant(2, 33), variant(3, 33)]}));
        check_variants(f, &c, &[
            ("Feature.Variants.C should return variant1", json!({"userId": "232"}), Some("variant1")),
            ("Feature.Variants.C should return variant2", json!({"userId": "607"}), Some("variant2")),
            ("Feature.Variants.C should return variant3", json!({"userId": "656"}), Some("variant3")),
        ]);
        let d = compile("Feature.Variants.D", json!({"environments": on, "variants": [variant(1, 1), variant(2, 49), variant(3, 50)]}));
        check_variants(f, &d, &[
            ("Feature.Variants.D should return variant1", json!({"userId": "712"}), Some("variant1")),
            ("Feature.Variants.D should return variant2", json!({"userId": "525"}), Some("variant2")),
            ("Feature.Variants.D should return variant3", json!({"userId": "537"}), Some("variant3")),
        ]);
        let mut v1 = variant(1, 33);
        v1["overrides"] = json!([{"attribute": "userId", "values": ["132", "61"]}]);
        let od = compile("Feature.Variants.override.D", json!({"environments": on, "variants": [v1, variant(2, 33), variant(3, 34)]}));
        check_variants(f, &od, &[
            ("Feature.Variants.override.D should return variant1 for user 132", json!({"userId": "132"}), Some("variant1")),
            ("Feature.Variants.override.D should return variant1 for user 61", json!({"userId": "61"}), Some("variant1")),
            ("Feature.Variants.override.D should return variant2 for user 388", json!({"userId": "388"}), Some("variant2")),
        ]);
        assert_eq!(od.evaluate(PROD, &json!({"userId": "132"})).reason, Reason::TargetingMatch);
        assert_eq!(od.evaluate(PROD, &json!({"userId": "388"})).reason, Reason::Split);

        let e = compile("Feature.Variants.E", json!({"environments": {"production": false}, "rules": [{}], "variants": [variant(1, 1)]}));
        let ev = e.evaluate(PROD, &json!({"userId": "0"}));
        assert_eq!((ev.value, ev.variant, ev.reason), (false, None, Reason::Disabled), "{f}: Feature.Variants.E should be disabled");

        let empty = compile("Feature.Variants.F", json!({"environments": on, "rules": [{}], "variants": []}));
        let ev = empty.evaluate(PROD, &json!({"userId": "0"}));
        assert_eq!((ev.value, ev.variant), (true, None), "{f}: Feature.Variants.F should be disabled when variants are empty");

        let g = compile("Feature.Variants.G", json!({
            "environments": on,
            "rules": [{"rollout": {"percentage": 0, "group_id": "feature-variant-g"}}],
            "variants": [variant(1, 1)]
        }));
        let ev = g.evaluate(PROD, &json!({"userId": "0"}));
        assert_eq!((ev.value, ev.variant, ev.reason), (false, None, Reason::Default), "{f}: Feature.Variants.G");

        let h = compile("Feature.Variants.H", json!({
            "environments": on, "rules": [{}],
            "variants": [{"name": "variant1", "weight": 1, "payload": {"type": "number", "value": "1.2"}}]
        }));
        let ev = h.evaluate(PROD, &json!({"userId": "0"}));
        assert_eq!(ev.payload, Some(&json!({"type": "number", "value": "1.2"})), "{f}: Feature.Variants.H");
    }

    #[test]
    fn node_client_variant_vectors() {
        // unleash-client-node src/test/variants.test.ts (feature "toggleName", weight-1 variants)
        let v = |n: u32, w: u32, s: Option<&str>| {
            let mut x = json!({"name": format!("variant{n}"), "weight": w});
            if let Some(s) = s {
                x["stickiness"] = json!(s);
            }
            x
        };
        let three = compile("toggleName", json!({"environments": {"production": true}, "variants": [v(1, 1, None), v(2, 1, None), v(3, 1, None)]}));
        check_variants("variants.test.ts", &three, &[
            ("selectVariant should select on 3 variants", json!({"userId": "0"}), Some("variant1")),
            ("selectVariant should select on 3 variants", json!({"userId": "zxa"}), Some("variant2")),
            ("selectVariant should select on 3 variants", json!({"userId": "ya"}), Some("variant3")),
        ]);
        let org = Some("organization");
        let four = compile("toggleName", json!({
            "environments": {"production": true},
            "variants": [v(1, 25, org), v(2, 25, org), v(3, 25, org), v(4, 25, org)]
        }));
        check_variants("variants.test.ts", &four, &[
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "1430"}), Some("variant1")),
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "125"}), Some("variant2")),
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "930"}), Some("variant3")),
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "381"}), Some("variant4")),
        ]);
    }

    #[test]
    fn spec_16_strategy_variants() {
        let f = "16-strategy-variants.json";
        let on = json!({"production": true});
        let flex = json!({"percentage": 100, "stickiness": "default", "group_id": "a"});
        let dev = json!([{"attribute": "environment", "op": "in", "values": ["dev"]}]);
        let vv = |name: &str, value: &str| json!({"name": name, "weight": 1, "payload": val(value)});

        let with_constraint = compile("Feature.strategy.variant.with.constraint", json!({
            "environments": on,
            "rules": [{"rollout": flex, "constraints": dev, "variants": [vv("variantName", "variantValue")]}]
        }));
        check_variants(f, &with_constraint, &[
            ("Feature.strategy.variant should return variant on enabled toggle", json!({"environment": "dev"}), Some("variantName")),
            ("Feature.strategy.variant should return disabled variant on disabled toggle", json!({"environment": "not-dev"}), None),
        ]);
        assert!(!with_constraint.evaluate(PROD, &json!({"environment": "not-dev"})).value);

        let overrides_feature = compile("Feature.strategy.variant.overrides.feature.variant", json!({
            "environments": on,
            "rules": [{"rollout": flex, "constraints": dev, "variants": [vv("variantName", "variantValue")]}],
            "variants": [vv("featureVariant", "willBeIgnored")]
        }));
        check_variants(f, &overrides_feature, &[(
            "Feature.strategy.variant.overrides.feature.variant should override feature variant",
            json!({"environment": "dev"}),
            Some("variantName"),
        )]);

        let multiple = compile("Feature.strategy.multiple.variants", json!({
            "environments": on,
            "rules": [{"rollout": flex, "variants": [vv("variantNameA", "variantValueA"), vv("variantNameB", "variantValueB")]}]
        }));
        check_variants(f, &multiple, &[
            ("Feature.strategy.multiple.variants should choose first variant", json!({"userId": "5"}), Some("variantNameA")),
            ("Feature.strategy.multiple.variants should choose second variant", json!({"userId": "0"}), Some("variantNameB")),
        ]);

        let empty = compile("Feature.strategy.empty.variants", json!({"environments": on, "rules": [{"rollout": flex, "variants": []}]}));
        let ev = empty.evaluate(PROD, &json!({}));
        assert_eq!((ev.value, ev.variant), (true, None), "{f}: Feature.strategy.empty.variants should return disabled variant");

        let fallback = compile("Feature.strategy.variant.fallback", json!({
            "environments": on,
            "rules": [{"rollout": flex}],
            "variants": [vv("featureVariant", "fallbackValue")]
        }));
        check_variants(f, &fallback, &[(
            "Feature.strategy.variant.fallback should fall back to feature variants",
            json!({}),
            Some("featureVariant"),
        )]);

        let numeric = compile("Feature.strategy.numeric.variants", json!({
            "environments": on,
            "rules": [{"rollout": flex, "variants": [
                {"name": "variantNameA", "weight": 1, "payload": {"type": "number", "value": "1.2"}},
                {"name": "variantNameB", "weight": 1, "payload": {"type": "number", "value": "1"}}
            ]}]
        }));
        let ev = numeric.evaluate(PROD, &json!({"userId": "0"}));
        assert_eq!(ev.variant, Some("variantNameB"), "{f}: Feature.strategy.numeric.variants should choose second variant");
        assert_eq!(ev.payload, Some(&json!({"type": "number", "value": "1"})));

        let base = compile("Feature.strategy.no.strategy.variants", json!({
            "environments": on,
            "rules": [{"rollout": flex, "variants": []}],
            "variants": [{"name": "variantNameA", "weight": 1, "payload": {"type": "number", "value": "1"}}]
        }));
        check_variants(f, &base, &[(
            "Feature.strategy.no.strategy.variants should fall back to base variants",
            json!({"userId": "0"}),
            Some("variantNameA"),
        )]);

        let sticky = compile("Feature.strategy.variants.stickiness", json!({
            "environments": on,
            "rules": [{"rollout": {"percentage": 100, "stickiness": "clientId", "group_id": "a"},
                       "variants": [vv("variantNameA", "variantValueA"), vv("variantNameB", "variantValueB")]}]
        }));
        check_variants(f, &sticky, &[
            ("Feature.strategy.variants.stickiness should inherit stickiness from the strategy - first variant", json!({"clientId": "1"}), Some("variantNameA")),
            ("Feature.strategy.variants.stickiness should inherit stickiness from the strategy - second variant", json!({"clientId": "2"}), Some("variantNameB")),
        ]);
    }

    #[test]
    fn spec_09_and_11_strategy_constraints() {
        let f = "09-strategy-constraints.json";
        let env_in = |values: Value| json!({"attribute": "environment", "op": "in", "values": values});
        check(f, &constraint(env_in(json!(["dev"]))), &[
            ("Feature.constraints.simple should not be enabled in default environment", json!({"environment": "default"}), false),
            ("Feature.constraints.simple should be enabled in dev environment", json!({"environment": "dev"}), true),
        ]);
        check(f, &constraint(env_in(json!(["dev", "stage", "prod"]))), &[
            ("Feature.constraints.list should be enabled in stage environment", json!({"environment": "stage"}), true),
            ("Feature.constraints.list should NOT be enabled in qa environment", json!({"environment": "qa"}), false),
        ]);
        let multi = rules("Feature.constraints.multi", json!([{"constraints": [
            env_in(json!(["prod"])),
            {"attribute": "userId", "op": "in", "values": ["1", "2", "3"]},
            {"attribute": "appName", "op": "not_in", "values": ["web", "sun-app"]}
        ]}]));
        check(f, &multi, &[
            ("Feature.constraints.multi should be enabled in prod for user 2", json!({"environment": "prod", "userId": "2"}), true),
            ("Feature.constraints.multi should NOT be enabled for unknown user", json!({"environment": "prod"}), false),
            ("Feature.constraints.multi should NOT be enabled appName=web", json!({"environment": "prod", "userId": "2", "appName": "web"}), false),
        ]);
        let dual = rules("Feature.constraints.dual", json!([{"constraints": [
            env_in(json!(["prod", "dev"])),
            {"attribute": "environment", "op": "not_in", "values": ["dev", "qa"]}
        ]}]));
        check(f, &dual, &[
            ("Feature.constraints.dual should be enabled in prod", json!({"environment": "prod"}), true),
            ("Feature.constraints.dual should not be enabled in dev", json!({"environment": "dev"}), false),
        ]);
        let two = rules("Feature.constraints.multiple.strategies", json!([
            {"constraints": [{"attribute": "userId", "op": "in", "values": ["123"]}]},
            {"constraints": [{"attribute": "userId", "op": "in", "values": ["456"]}]}
        ]));
        check(f, &two, &[("Constraint should work with the latter strategy", json!({"userId": "456"}), true)]);

        let f = "11-strategy-constraints-edge-cases.json";
        check(f, &constraint(env_in(json!([]))), &[
            ("Feature.constraints.no_value should not be enabled in default environment", json!({"environment": "default"}), false),
            ("Feature.constraints.no_value should not be enabled in empty environment", json!({}), false),
        ]);
        check(f, &constraint(json!({"attribute": "environment", "op": "not_in", "values": []})), &[
            ("Feature.constraints.no_values_NOT_IN should be enabled in default environment", json!({"environment": "default"}), true),
            ("Feature.constraints.no_values_NOT_IN should be enabled in empty environment", json!({}), true),
        ]);
        check(f, &rules("Feature.constraints.empty", json!([{"constraints": []}])), &[
            ("Feature.constraints.empty should be enabled", json!({"environment": "default"}), true),
            ("Feature.constraints.empty should be enabled for empty env", json!({}), true),
        ]);
    }

    // -- operators -----------------------------------------------------------------------------

    #[test]
    fn spec_13_string_operators() {
        let f = "13-constraint-operators.json";
        let c = |attr: &str, op: &str, values: Value, extra: Value| {
            let mut x = json!({"attribute": attr, "op": op, "values": values});
            for (k, v) in extra.as_object().unwrap() {
                x[k] = v.clone();
            }
            constraint(x)
        };
        check(f, &c("customField", "str_starts_with", json!(["some-string"]), json!({})), &[
            ("F1.startsWith should be enabled", json!({"customField": "some-string-is-cool"}), true),
            ("F1.startsWith should be disabled", json!({"customField": "some2-is-cool-string"}), false),
        ]);
        check(f, &c("customField", "str_starts_with", json!(["e1", "e2"]), json!({})), &[
            ("F2.startsWith.multiple should be enabled", json!({"customField": "e2 cool"}), true),
            ("F2.startsWith.multiple should be disabled", json!({"customField": "cool e1"}), false),
        ]);
        check(f, &c("customField", "str_starts_with", json!(["TEST"]), json!({"case_insensitive": true})), &[
            ("F2.startsWith.caseInsensitve should be enabled", json!({"customField": "test@example.com"}), true),
            ("F2.startsWith.caseInsensitve should handle various cases when enabled", json!({"customField": "TEsT@example.com"}), true),
        ]);
        check(f, &c("email", "str_ends_with", json!(["some-email.com"]), json!({})), &[
            ("F3.endsWith should be enabled", json!({"email": "test@some-email.com"}), true),
            ("F3.endsWith should be disabled when casing is incorrect", json!({"email": "test@some-EMAIL.com"}), false),
            ("F3.endsWith should be disabled", json!({"email": "test@another-email.com"}), false),
        ]);
        check(f, &c("email", "str_ends_with", json!(["some-email.com"]), json!({"case_insensitive": true})), &[(
            "F3.endsWith.ignoringCase should be enabled",
            json!({"email": "test@SOME-EMAIL.com"}),
            true,
        )]);
        check(f, &c("email", "str_contains", json!(["email"]), json!({})), &[
            ("F4.contains should be enabled", json!({"email": "test@some-email.com"}), true),
            ("F4.contains should be disabled", json!({"email": "test@another.com"}), false),
        ]);
        check(f, &c("email", "str_contains", json!(["email"]), json!({"inverted": true})), &[(
            "F4.contains.inverted should be enabled",
            json!({"email": "test@another.com"}),
            true,
        )]);
        check(f, &constraint(json!({"attribute": "customFieldMissing", "op": "in", "values": ["s1"]})), &[
            ("F8.missing-field.IN should return false", json!({}), false),
            ("F8.missing-field.IN should return true when present", json!({"customFieldMissing": "s1"}), true),
        ]);
        check(f, &constraint(json!({"attribute": "customFieldMissing", "op": "not_in", "values": ["s1"]})), &[
            ("F8.missing-field.NOT_IN should return true", json!({}), true),
            ("F8.missing-field.NOT_IN should return true when null", json!({"customFieldMissing": null}), true),
        ]);
        check(f, &constraint(json!({"attribute": "someValue", "op": "in", "values": ["s1", "s2"], "inverted": true})), &[(
            "F9.inverted.IN should return false when present but inverted",
            json!({"someValue": "s1"}),
            false,
        )]);
        check(f, &constraint(json!({"attribute": "someValue", "op": "not_in", "values": ["s1", "s2"], "inverted": true})), &[(
            "F10.inverted.NOT_IN should return true when present but inverted",
            json!({"someValue": "s1"}),
            true,
        )]);
    }

    #[test]
    fn spec_13_numeric_operators() {
        let f = "13-constraint-operators.json";
        let n = |op: &str, value: Value, inverted: bool| {
            constraint(json!({"attribute": "someValue", "op": op, "value": value, "inverted": inverted}))
        };
        check(f, &n("num_eq", json!(12), false), &[
            ("F5.numEq", json!({"someValue": "12"}), true),
            ("F5.numEq works for floats", json!({"someValue": "12.0"}), true),
        ]);
        check(f, &n("num_eq", json!(12.0), false), &[
            ("F5.numEq.float works for floats", json!({"someValue": "12.0"}), true),
            ("F5.numEq.float works for integers", json!({"someValue": "12"}), true),
        ]);
        check(f, &n("num_eq", json!(12), true), &[
            ("F5.numEq.inverted should be false", json!({"someValue": "12"}), false),
            ("F5.numEq.inverted should be true", json!({"someValue": "13"}), true),
        ]);
        check(f, &n("num_gt", json!(12), false), &[
            ("F5.numGT should be true", json!({"someValue": "13"}), true),
            ("F5.numGT should be false", json!({"someValue": "12"}), false),
        ]);
        check(f, &n("num_gte", json!(12), false), &[
            ("F5.numGTE should be true when equal", json!({"someValue": "12"}), true),
            ("F5.numGTE should be true when larger", json!({"someValue": "13"}), true),
            ("F5.numGTE should be false when lower", json!({"someValue": "11"}), false),
        ]);
        check(f, &n("num_lte", json!(12), false), &[
            ("F5.numLTE should be false when higher", json!({"someValue": "13"}), false),
            ("F5.numLTE should be true when equal", json!({"someValue": "12"}), true),
            ("F5.numLTE should be true when lower", json!({"someValue": "0"}), true),
        ]);
        check(f, &n("num_lt", json!(12), false), &[
            ("F5.numLT should be true when lower", json!({"someValue": "0"}), true),
            ("F5.numLT should be false when equal", json!({"someValue": "12"}), false),
        ]);
        let range = rules("F6.number-range", json!([{"constraints": [
            {"attribute": "someValue", "op": "num_gt", "value": 12},
            {"attribute": "someValue", "op": "num_lt", "value": 16}
        ]}]));
        check(f, &range, &[
            ("F6.number-range should be false when not in range", json!({"someValue": "11"}), false),
            ("F6.number-range should be true when in range", json!({"someValue": "14"}), true),
        ]);
        // beyond the spec: JSON numbers in the context, and text that is not a number
        let gt = n("num_gt", json!(12), false);
        assert!(gt.evaluate(PROD, &json!({"someValue": 12.5})).value);
        assert!(!gt.evaluate(PROD, &json!({"someValue": "twelve"})).value);
        assert!(!gt.evaluate(PROD, &json!({"someValue": "inf"})).value);
        assert!(!gt.evaluate(PROD, &json!({"someValue": true})).value);
        assert!(!gt.evaluate(PROD, &json!({})).value);
    }

    #[test]
    fn spec_14_semver_operators() {
        let f = "14-constraint-semver-operators.json";
        let s = |op: &str, value: &str| constraint(json!({"attribute": "version", "op": op, "value": value}));
        let v = |x: &str| json!({"version": x});
        check(f, &s("semver_eq", "1.2.2"), &[
            ("F8.semverEQ should be enabled", v("1.2.2"), true),
            ("F8.semverEQ should be disabled", v("1.2.0"), false),
        ]);
        check(f, &s("semver_gt", "1.2.2"), &[
            ("F8.semverGT should be enabled", v("1.2.3"), true),
            ("F8.semverGT should be disabled", v("1.2.0"), false),
        ]);
        check(f, &s("semver_gte", "1.2.2"), &[
            ("F8.semverGTE should be enabled", v("1.2.2"), true),
            ("F8.semverGTE should be enabled for greater", v("1.2.3"), true),
            ("F8.semverGTE should be disabled", v("1.2.1"), false),
        ]);
        check(f, &s("semver_lt", "1.2.2"), &[
            ("F8.semverLT should be enabled", v("1.2.1"), true),
            ("F8.semverLT should be disabled", v("1.2.3"), false),
        ]);
        check(f, &s("semver_lte", "1.2.2"), &[
            ("F8.semverLTE should be enabled", v("1.2.2"), true),
            ("F8.semverLTE should be enabled for less", v("1.2.1"), true),
            ("F8.semverLTE should be disabled", v("1.2.3"), false),
        ]);
        check(f, &s("semver_gt", "2.0.0-alpha.1"), &[
            ("F8.semverAlphaGT is less than beta", v("2.0.0-beta.1"), true),
            ("F8.semverAlphaGT operator is less than release", v("2.0.0"), true),
        ]);
        check(f, &s("semver_lt", "2.0.0-alpha.1"), &[
            ("F8.semverAlphaLT is less than beta", v("2.0.0-beta.1"), false),
            ("F8.semverAlphaLT is greater than old beta", v("1.9.1-beta.1"), true),
        ]);
        check(f, &s("semver_lt", "2.0.0-alpha.3"), &[
            ("F8.semverAlphaVersioning alpha.1 is less than alpha.3", v("2.0.0-alpha.1"), true),
            ("F8.semverAlphaVersioning alpha.4 is greater than alpha.3", v("2.0.0-alpha.4"), false),
        ]);
        check(f, &s("semver_gt", "2.0.0-alpha"), &[(
            "F8.alphaUnnumbered - unnumbered is LT than numbered",
            v("2.0.0-alpha.1"),
            true,
        )]);
        check(f, &s("semver_gt", "2.0.0-rc"), &[
            ("F8.releaseCandidate - alpha is not greater than rc", v("2.0.0-alpha.1"), false),
            ("F8.releaseCandidate - beta is not greater tha rc", v("2.0.0-beta.1"), false),
            ("F8.releaseCandidate - release is greater than rc", v("2.0.0"), true),
        ]);
        // the spec's F8.invalidSemverWithLeadingV has "v2.0.0" as the constraint value: quantops
        // rejects it when the flag is written; a context value like it never matches
        check(f, &s("semver_eq", "2.0.0"), &[
            ("F8.invalidSemverWithLeadingV - invalid semver resolves to false", v("v2.0.0"), false),
            ("F8.invalidSemverWithLeadingV - broken semver resolves to false", v("not a semver"), false),
        ]);
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "version", "op": "semver_eq", "value": "v2.0.0"}]})),
            "rule 1 constraint 1: invalid semver \"v2.0.0\" for op \"semver_eq\""
        );
    }

    #[test]
    fn semver_precedence_follows_semver_2() {
        // semver.org, section 11: each is lower than the next
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ];
        for w in chain.windows(2) {
            let (a, b) = (Semver::parse(w[0]).unwrap(), Semver::parse(w[1]).unwrap());
            assert_eq!(a.precedence(&b), Ordering::Less, "{} < {}", w[0], w[1]);
            assert_eq!(b.precedence(&a), Ordering::Greater, "{} > {}", w[1], w[0]);
        }
        // build metadata does not count
        let (a, b) = (Semver::parse("1.0.0+build.1").unwrap(), Semver::parse("1.0.0+001").unwrap());
        assert_eq!(a.precedence(&b), Ordering::Equal);
        assert_eq!(Semver::parse("1.2.3-x-y.0--+b-1"), Some(Semver { major: 1, minor: 2, patch: 3, pre: "x-y.0--" }));
        for bad in ["v1.2.3", "1.2", "1.2.3.4", "01.2.3", "1.2.3-01", "1.2.3-", "1.2.3+", "1.2.3-a..b", "1.2.3-a_b", "", "1.2.x"] {
            assert_eq!(Semver::parse(bad), None, "{bad}");
        }
        // numbers larger than u64 are not versions rather than a panic
        assert_eq!(Semver::parse("99999999999999999999.0.0"), None);
    }

    #[test]
    fn eq_neq_and_case_insensitive_membership() {
        let eq = constraint(json!({"attribute": "strategy", "op": "eq", "value": "momentum"}));
        assert!(eq.evaluate(PROD, &json!({"strategy": "momentum"})).value);
        assert!(!eq.evaluate(PROD, &json!({"strategy": "Momentum"})).value);
        assert!(!eq.evaluate(PROD, &json!({})).value);
        let neq = constraint(json!({"attribute": "strategy", "op": "neq", "value": "momentum"}));
        assert!(!neq.evaluate(PROD, &json!({"strategy": "momentum"})).value);
        assert!(neq.evaluate(PROD, &json!({"strategy": "carry"})).value);
        assert!(neq.evaluate(PROD, &json!({})).value, "a missing attribute is not equal, as not_in");
        // numbers and booleans compare by their text
        let num = constraint(json!({"attribute": "user_id", "op": "in", "values": [42, "43", true]}));
        assert!(num.evaluate(PROD, &json!({"user_id": 42})).value);
        assert!(num.evaluate(PROD, &json!({"user_id": "42"})).value);
        assert!(num.evaluate(PROD, &json!({"user_id": 43})).value);
        assert!(num.evaluate(PROD, &json!({"user_id": true})).value);
        assert!(!num.evaluate(PROD, &json!({"user_id": [42]})).value, "an array counts as missing");
        let ci = constraint(json!({"attribute": "role", "op": "in", "values": ["Desk", "ÉQUIPE"], "case_insensitive": true}));
        assert!(ci.evaluate(PROD, &json!({"role": "DESK"})).value);
        assert!(ci.evaluate(PROD, &json!({"role": "équipe"})).value);
        assert!(!ci.evaluate(PROD, &json!({"role": "admin"})).value);
        // a long list takes the binary search
        let many: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
        let long = constraint(json!({"attribute": "user_id", "op": "in", "values": many}));
        assert!(long.evaluate(PROD, &json!({"user_id": "u57"})).value);
        assert!(!long.evaluate(PROD, &json!({"user_id": "u100"})).value);
        // non-ASCII text under case_insensitive str_contains
        let c = constraint(json!({"attribute": "desk", "op": "str_contains", "values": ["ZÜRICH"], "case_insensitive": true}));
        assert!(c.evaluate(PROD, &json!({"desk": "fx-zürich-2"})).value);
        assert!(!c.evaluate(PROD, &json!({"desk": "fx-zurich-2"})).value);
    }

    #[test]
    fn attribute_aliases() {
        let f = constraint(json!({"attribute": "user_id", "op": "in", "values": ["7"]}));
        assert!(f.evaluate(PROD, &json!({"user_id": "7"})).value);
        assert!(f.evaluate(PROD, &json!({"userId": "7"})).value);
        let g = constraint(json!({"attribute": "sessionId", "op": "in", "values": ["s"]}));
        assert!(g.evaluate(PROD, &json!({"session_id": "s"})).value);
        // the rule's spelling wins when both are present
        assert!(!f.evaluate(PROD, &json!({"user_id": "8", "userId": "7"})).value);
        // the pair-slice context
        let pairs: &[(&str, &str)] = &[("role", "desk"), ("userId", "7")];
        assert!(f.evaluate(PROD, pairs).value);
    }

    // -- flag semantics ------------------------------------------------------------------------

    #[test]
    fn kill_switch_overrides_everything() {
        let f = compile("k", json!({"environments": {"production": true}, "kill_switch": true, "rules": [{}]}));
        let ev = f.evaluate(PROD, &json!({"userId": "1"}));
        assert_eq!((ev.value, ev.reason, ev.variant), (false, Reason::Disabled, None));
    }

    #[test]
    fn environments_switch_the_flag() {
        let f = compile("e", json!({"environments": {"local": true, "staging": false}}));
        let ctx = json!({});
        let local = f.evaluate(Environment::Local, &ctx);
        assert_eq!((local.value, local.reason), (true, Reason::Static));
        let staging = f.evaluate(Environment::Staging, &ctx);
        assert_eq!((staging.value, staging.reason), (false, Reason::Disabled));
        let production = f.evaluate(Environment::Production, &ctx);
        assert_eq!((production.value, production.reason), (false, Reason::Disabled), "an absent environment is off");
        assert_eq!(Environment::parse("staging"), Ok(Environment::Staging));
        assert_eq!(
            Environment::parse("prod").unwrap_err().to_string(),
            "unknown environment \"prod\" (expected local, staging or production)"
        );
        for env in Environment::ALL {
            assert_eq!(Environment::parse(env.name()), Ok(env));
        }
    }

    #[test]
    fn rules_are_ordered_and_fall_through() {
        let f = rules("order", json!([
            {"name": "desk-rollout", "constraints": [{"attribute": "role", "op": "eq", "value": "desk"}],
             "rollout": {"percentage": 0}},
            {"name": "desk", "constraints": [{"attribute": "role", "op": "eq", "value": "desk"}],
             "variants": [{"name": "second", "weight": 1}]},
            {"name": "everyone", "rollout": {"percentage": 100}, "variants": [{"name": "third", "weight": 1}]}
        ]));
        // out of the first rule's rollout, the second decides
        let ev = f.evaluate(PROD, &json!({"role": "desk", "user_id": "u1"}));
        assert_eq!((ev.value, ev.reason, ev.rule, ev.variant), (true, Reason::TargetingMatch, Some(1), Some("second")));
        let ev = f.evaluate(PROD, &json!({"role": "quant", "user_id": "u1"}));
        assert_eq!((ev.value, ev.reason, ev.rule, ev.variant), (true, Reason::Split, Some(2), Some("third")));
        assert_eq!(f.rules()[0].name.as_deref(), Some("desk-rollout"));
        // no rule true
        let g = rules("none", json!([{"constraints": [{"attribute": "role", "op": "eq", "value": "desk"}]}]));
        let ev = g.evaluate(PROD, &json!({"role": "quant"}));
        assert_eq!((ev.value, ev.reason, ev.rule), (false, Reason::Default, None));
    }

    #[test]
    fn reasons() {
        let on = json!({"production": true});
        let ctx = json!({"user_id": "u1", "role": "desk"});
        let stat = compile("s", json!({"environments": on}));
        assert_eq!(stat.evaluate(PROD, &ctx).reason, Reason::Static);
        let one_variant = compile("s", json!({"environments": on, "variants": [{"name": "a", "weight": 3}, {"name": "b", "weight": 0}]}));
        let ev = one_variant.evaluate(PROD, &ctx);
        assert_eq!((ev.reason, ev.variant), (Reason::Static, Some("a")), "a variant no draw could change is static");
        let split = compile("s", json!({"environments": on, "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}));
        assert_eq!(split.evaluate(PROD, &ctx).reason, Reason::Split);
        // without a stickiness value, a real split has no variant but the flag stays on
        let ev = split.evaluate(PROD, &json!({}));
        assert_eq!((ev.value, ev.variant, ev.reason), (true, None, Reason::Static));
        let targeted = rules("t", json!([{"constraints": [{"attribute": "role", "op": "in", "values": ["desk"]}]}]));
        assert_eq!(targeted.evaluate(PROD, &ctx).reason, Reason::TargetingMatch);
        let rollout = rules("r", json!([{"rollout": {"percentage": 100, "stickiness": "user_id"}}]));
        assert_eq!(rollout.evaluate(PROD, &ctx).reason, Reason::Split);
        // a weight-0 variant is reachable through its override
        let hidden = compile("h", json!({"environments": on, "variants": [
            {"name": "a", "weight": 1}, {"name": "b", "weight": 0, "overrides": [{"attribute": "role", "values": ["desk"]}]}
        ]}));
        let ev = hidden.evaluate(PROD, &ctx);
        assert_eq!((ev.variant, ev.reason), (Some("b"), Reason::TargetingMatch));
    }

    #[test]
    fn error_helpers() {
        let ev = Evaluation::flag_not_found(true);
        assert_eq!((ev.value, ev.reason, ev.error_code), (true, Reason::Error, Some(ErrorCode::FlagNotFound)));
        assert_eq!(ev.reason.as_str(), "ERROR");
        assert_eq!(ErrorCode::FlagNotFound.as_str(), "FLAG_NOT_FOUND");
        let ev = Evaluation::error(ErrorCode::ParseError, false);
        assert_eq!((ev.value, ev.error_code.map(ErrorCode::as_str)), (false, Some("PARSE_ERROR")));
        let names: Vec<&str> = [Reason::Static, Reason::TargetingMatch, Reason::Split, Reason::Disabled, Reason::Default]
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(names, ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "DEFAULT"]);
    }

    #[test]
    fn rollout_default_stickiness_and_missing_values() {
        let r = |p: u32| rules("m", json!([{"rollout": {"percentage": p}}]));
        // default stickiness: user_id, then session_id; missing is out below 100 %, in at 100 %
        assert!(r(100).evaluate(PROD, &json!({})).value);
        assert!(!r(99).evaluate(PROD, &json!({})).value);
        assert!(!r(0).evaluate(PROD, &json!({"user_id": "x"})).value);
        // an empty user_id falls back to session_id
        let f = r(50);
        let with_session = f.evaluate(PROD, &json!({"user_id": "", "session_id": "s-9"})).value;
        assert_eq!(with_session, normalized_value("s-9", "m", 100, 0) <= 50);
        // a numeric user id hashes its JSON text
        let n = f.evaluate(PROD, &json!({"user_id": 12345})).value;
        assert_eq!(n, f.evaluate(PROD, &json!({"user_id": "12345"})).value);
        // group_id defaults to the flag key
        assert_eq!(f.rules()[0].rollout().unwrap().group_id(), "m");
        assert_eq!(f.rules()[0].rollout().unwrap().stickiness(), "default");
    }

    #[test]
    fn rollout_proportion_is_close_to_the_percentage() {
        let f = rules("proportion", json!([{"rollout": {"percentage": 25, "stickiness": "user_id"}}]));
        let on = (0..20_000).filter(|i| f.evaluate(PROD, &json!({"user_id": format!("user-{i}")})).value).count();
        assert!((4_600..5_400).contains(&on), "{on} of 20000");
    }

    #[test]
    fn evaluation_is_deterministic() {
        let f = compile("det", json!({
            "environments": {"production": true},
            "rules": [{"rollout": {"percentage": 40, "stickiness": "user_id", "group_id": "g"},
                       "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}, {"name": "c", "weight": 3}]}]
        }));
        let again = compile("det", json!({
            "environments": {"production": true},
            "rules": [{"rollout": {"percentage": 40, "stickiness": "user_id", "group_id": "g"},
                       "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}, {"name": "c", "weight": 3}]}]
        }));
        for i in 0..500 {
            let ctx = json!({"user_id": format!("u{i}")});
            let a = f.evaluate(PROD, &ctx);
            assert_eq!(a, f.evaluate(PROD, &ctx));
            assert_eq!(a, again.evaluate(PROD, &ctx));
            // and matches the reference formulas
            let uid = format!("u{i}");
            let inside = normalized_value(&uid, "g", 100, ROLLOUT_SEED) <= 40;
            assert_eq!(a.value, inside);
            if inside {
                let target = normalized_value(&uid, "g", 6, VARIANT_SEED);
                let want = if target <= 1 { "a" } else if target <= 3 { "b" } else { "c" };
                assert_eq!(a.variant, Some(want));
            }
        }
    }

    #[test]
    fn utf8_ids_hash_their_utf8_bytes() {
        // multi-byte user ids and group ids: the key is the UTF-8 bytes of "<group>:<id>"
        for (group, id) in [("Feature.UTF-8.Hellø_Wørld", "Jürgen"), ("😊_φriend_你好_🌍", "用户-42"), ("g", "ß")] {
            let key = format!("{group}:{id}");
            assert_eq!(normalized_value(id, group, 100, 0), murmur3_32(key.as_bytes(), 0) % 100 + 1);
            let f = rules("x", json!([{"rollout": {"percentage": 50, "stickiness": "user_id", "group_id": group}}]));
            let want = murmur3_32(key.as_bytes(), 0) % 100 + 1 <= 50;
            assert_eq!(f.evaluate(PROD, &json!({"user_id": id})).value, want, "{key}");
        }
        // "ß" is two bytes in UTF-8: hashing Latin-1 or UTF-16 would differ
        assert_ne!(murmur3_32("g:ß".as_bytes(), 0), murmur3_32(&[b'g', b':', 0xdf], 0));
        // 18-utf8-flag-names.json: UTF-8 flag keys with a default strategy are enabled
        for key in ["Feature.UTF-8.Hellø_Wørld", "Feature.UTF-8.😊_φriend_你好_🌍"] {
            assert!(rules(key, json!([{}])).evaluate(PROD, &json!({})).value, "{key}");
        }
    }

    #[test]
    fn long_stickiness_values_take_the_heap_path() {
        let long = "u".repeat(500);
        let group = "a-long-group-id";
        let f = rules("l", json!([{"rollout": {"percentage": 50, "stickiness": "user_id", "group_id": group}}]));
        let want = normalized_value(&long, group, 100, 0) <= 50;
        assert_eq!(f.evaluate(PROD, &json!({"user_id": long})).value, want);
        let key = format!("{group}:{long}");
        assert_eq!(normalized_value(&long, group, 100, 0), murmur3_32(key.as_bytes(), 0) % 100 + 1);
    }

    // -- validation ----------------------------------------------------------------------------

    #[test]
    fn rejects_a_definition_that_is_not_an_object() {
        assert_eq!(error(json!([1])), "flag: must be a json object");
        assert_eq!(
            CompiledFlag::compile_str("f", "{").unwrap_err().to_string(),
            "flag definition is not valid json: EOF while parsing an object at line 1 column 1"
        );
        assert!(CompiledFlag::compile_str("f", r#"{"environments": {"local": true}}"#).is_ok());
        assert_eq!(CompiledFlag::compile("", &json!({"environments": {}})).unwrap_err(), FlagError::EmptyKey);
        assert_eq!(rule_error(json!(3)), "rule 1: must be a json object");
    }

    #[test]
    fn rejects_unknown_keys() {
        assert_eq!(error(json!({"environments": {}, "enabled": true})), "flag: unknown key \"enabled\"");
        assert_eq!(rule_error(json!({"strategy": "x"})), "rule 1: unknown key \"strategy\"");
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "in", "values": [], "negate": true}]})),
            "rule 1 constraint 1: unknown key \"negate\""
        );
        assert_eq!(rule_error(json!({"rollout": {"percentage": 5, "seed": 1}})), "rule 1 rollout: unknown key \"seed\"");
        assert_eq!(rule_error(json!({"variants": [{"name": "a", "weight": 1, "color": "red"}]})), "rule 1 variant 1: unknown key \"color\"");
    }

    #[test]
    fn rejects_missing_and_mistyped_keys() {
        assert_eq!(error(json!({})), "flag: missing \"environments\"");
        assert_eq!(error(json!({"environments": {}, "kill_switch": "no"})), "flag: \"kill_switch\" must be a boolean");
        assert_eq!(error(json!({"environments": {}, "rules": {}})), "flag: \"rules\" must be an array");
        assert_eq!(error(json!({"environments": {"staging": 1}})), "flag: \"environments\" must be an object of environment names to booleans");
        assert_eq!(error(json!({"environments": []})), "flag: \"environments\" must be an object of environment names to booleans");
        assert_eq!(rule_error(json!({"constraints": [{"op": "in", "values": []}]})), "rule 1 constraint 1: missing \"attribute\"");
        assert_eq!(rule_error(json!({"constraints": [{"attribute": "", "op": "in", "values": []}]})), "rule 1 constraint 1: \"attribute\" must be a non-empty string");
        assert_eq!(rule_error(json!({"constraints": [{"attribute": "a", "op": "in"}]})), "rule 1 constraint 1: missing \"values\"");
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "in", "values": [{"x": 1}]}]})),
            "rule 1 constraint 1: \"values\" must be an array of strings, numbers or booleans"
        );
    }

    #[test]
    fn rejects_unknown_environments() {
        assert_eq!(error(json!({"environments": {"prod": true}})), "unknown environment \"prod\" (expected local, staging or production)");
    }

    #[test]
    fn rejects_unknown_ops() {
        let err = error(json!({"environments": {}, "rules": [
            {},
            {"constraints": [{"attribute": "role", "op": "x", "values": []}]}
        ]}));
        assert_eq!(err, "rule 2 constraint 1: unknown op \"x\"");
        // Unleash's upper-case spelling is not ours
        assert_eq!(rule_error(json!({"constraints": [{"attribute": "a", "op": "IN", "values": []}]})), "rule 1 constraint 1: unknown op \"IN\"");
    }

    #[test]
    fn rejects_a_value_key_that_does_not_fit_the_op() {
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "num_gt", "values": [1]}]})),
            "rule 1 constraint 1: op \"num_gt\" takes \"value\", not \"values\""
        );
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "in", "value": "x"}]})),
            "rule 1 constraint 1: op \"in\" takes \"values\", not \"value\""
        );
    }

    #[test]
    fn rejects_non_numeric_num_values() {
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "num_lte", "value": "12"}]})),
            "rule 1 constraint 1: \"value\" must be a number for op \"num_lte\""
        );
    }

    #[test]
    fn rejects_invalid_semver_values() {
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "v", "op": "semver_lt", "value": "1.2"}]})),
            "rule 1 constraint 1: invalid semver \"1.2\" for op \"semver_lt\""
        );
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "v", "op": "semver_lt", "value": 1}]})),
            "rule 1 constraint 1: \"value\" must be a semver string"
        );
    }

    #[test]
    fn rejects_empty_string_operands() {
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "str_contains", "values": []}]})),
            "rule 1 constraint 1: \"values\" must not be empty for op \"str_contains\""
        );
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "str_ends_with", "values": ["x", ""]}]})),
            "rule 1 constraint 1: empty string in \"values\" for op \"str_ends_with\""
        );
    }

    #[test]
    fn rejects_case_insensitive_on_numbers() {
        assert_eq!(
            rule_error(json!({"constraints": [{"attribute": "a", "op": "num_eq", "value": 1, "case_insensitive": true}]})),
            "rule 1 constraint 1: \"case_insensitive\" does not apply to op \"num_eq\""
        );
    }

    #[test]
    fn rejects_percentages_out_of_range() {
        assert_eq!(rule_error(json!({"rollout": {"percentage": 120}})), "rule 1 rollout: percentage 120 not in 0..100");
        assert_eq!(rule_error(json!({"rollout": {"percentage": -1}})), "rule 1 rollout: percentage -1 not in 0..100");
        assert_eq!(rule_error(json!({"rollout": {"percentage": 12.5}})), "rule 1 rollout: percentage 12.5 not in 0..100");
        assert_eq!(rule_error(json!({"rollout": {"percentage": "25"}})), "rule 1 rollout: \"percentage\" must be an integer in 0..100");
        assert_eq!(rule_error(json!({"rollout": {}})), "rule 1 rollout: missing \"percentage\"");
    }

    #[test]
    fn rejects_bad_stickiness() {
        assert_eq!(
            rule_error(json!({"rollout": {"percentage": 5, "stickiness": ""}})),
            "rule 1 rollout: \"stickiness\" must be a non-empty string"
        );
        assert_eq!(
            rule_error(json!({"rollout": {"percentage": 5, "stickiness": 3}})),
            "rule 1 rollout: \"stickiness\" must be a non-empty string"
        );
        assert_eq!(
            rule_error(json!({"rollout": {"percentage": 5, "stickiness": "random"}})),
            "rule 1 rollout: stickiness \"random\" is not supported (evaluation is deterministic)"
        );
        assert_eq!(
            rule_error(json!({"rollout": {"percentage": 5, "group_id": ""}})),
            "rule 1 rollout: \"group_id\" must be a non-empty string"
        );
        assert_eq!(
            rule_error(json!({"variants": [{"name": "a", "weight": 1, "stickiness": "org"}, {"name": "b", "weight": 1}]})),
            "rule 1: variants must all set the same stickiness, or none"
        );
    }

    #[test]
    fn rejects_bad_variant_weights() {
        assert_eq!(rule_error(json!({"variants": [{"name": "a", "weight": -1}]})), "rule 1 variant 1: weight -1 must be an integer in 0..1000000");
        assert_eq!(rule_error(json!({"variants": [{"name": "a", "weight": 0.5}]})), "rule 1 variant 1: weight 0.5 must be an integer in 0..1000000");
        assert_eq!(rule_error(json!({"variants": [{"name": "a", "weight": "1"}]})), "rule 1 variant 1: weight \"1\" must be an integer in 0..1000000");
        assert_eq!(rule_error(json!({"variants": [{"name": "a", "weight": 1000001}]})), "rule 1 variant 1: weight 1000001 must be an integer in 0..1000000");
        assert_eq!(
            rule_error(json!({"variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]})),
            "rule 1: variant weights must sum to more than 0"
        );
        assert_eq!(
            error(json!({"environments": {}, "variants": [{"name": "a", "weight": 0}]})),
            "flag: variant weights must sum to more than 0"
        );
        assert_eq!(rule_error(json!({"variants": [{"name": "a"}]})), "rule 1 variant 1: missing \"weight\"");
    }

    #[test]
    fn rejects_bad_variant_names_and_overrides() {
        assert_eq!(
            rule_error(json!({"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]})),
            "rule 1: duplicate variant \"a\""
        );
        assert_eq!(rule_error(json!({"variants": [{"weight": 1}]})), "rule 1 variant 1: missing \"name\"");
        assert_eq!(
            rule_error(json!({"variants": [{"name": "a", "weight": 1, "overrides": [{"attribute": "user_id"}]}]})),
            "rule 1 variant 1 override 1: missing \"values\""
        );
    }

    // -- measurement ---------------------------------------------------------------------------

    #[test]
    fn bench_counts_what_the_reference_formula_counts() {
        let n = 4096u64;
        let (enabled, _) = bench_evaluations(n);
        let want = (0..n)
            .filter(|&i| {
                let ctx = bench_context(i);
                let role = ctx["role"].as_str().unwrap();
                let user = ctx["user_id"].as_str().unwrap();
                (role == "desk" || role == "admin")
                    && murmur3_32(format!("bench.flag:{user}").as_bytes(), 0) % 100 < 25
            })
            .count() as u64;
        assert_eq!(enabled, want);
        assert!(enabled > 0 && enabled < n);
    }
}
