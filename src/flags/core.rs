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

use super::compile::{check_keys, compile_rule, compile_variants, object, opt_array, opt_bool, opt_string};
use super::context::Context;
pub use super::defs::FlagError;
use super::rollout::{Pick, Rule, Variants};

use serde_json::Value;

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

    pub(crate) fn index(self) -> usize {
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

    pub(crate) fn off(reason: Reason) -> Evaluation<'static> {
        Evaluation { value: false, variant: None, payload: None, reason, error_code: None, rule: None }
    }
}

// ---------------------------------------------------------------------------------------------
// the compiled flag

/// A flag parsed, validated and ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFlag {
    pub(crate) key: String,
    pub(crate) description: Option<String>,
    pub(crate) environments: [bool; 3],
    pub(crate) kill_switch: bool,
    pub(crate) rules: Vec<Rule>,
    pub(crate) variants: Option<Variants>,
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
        let envs_type =
            || FlagError::WrongType { at: at.into(), key: "environments", expected: "an object of environment names to booleans" };
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

    pub(crate) fn on<'f, C: Context + ?Sized>(
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
