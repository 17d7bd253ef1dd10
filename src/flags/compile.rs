//! Compiling a flag definition (JSON) into a [`CompiledFlag`]: every check of its shape.

use super::constraint::{Constraint, Op, StrKind, Test};
use super::context::Attr;
use super::defs::{FlagError, MAX_VARIANTS, MAX_WEIGHT};
use super::rollout::{Rollout, Rule, Stickiness, Variant, Variants};
use super::semver::{OwnedSemver, Semver};

use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// compilation helpers

pub(crate) fn object<'v>(v: &'v Value, at: &str) -> Result<&'v Map<String, Value>, FlagError> {
    v.as_object().ok_or_else(|| FlagError::NotAnObject { at: at.to_string() })
}

pub(crate) fn check_keys(obj: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), FlagError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(FlagError::UnknownKey { at: at.to_string(), key: k.clone() }),
        None => Ok(()),
    }
}

pub(crate) fn opt_string<'v>(obj: &'v Map<String, Value>, at: &str, key: &'static str) -> Result<Option<&'v str>, FlagError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "a string" }),
    }
}

pub(crate) fn non_empty_string<'v>(obj: &'v Map<String, Value>, at: &str, key: &'static str) -> Result<Option<&'v str>, FlagError> {
    match opt_string(obj, at, key) {
        Ok(Some("")) | Err(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "a non-empty string" }),
        other => other,
    }
}

pub(crate) fn opt_bool(obj: &Map<String, Value>, at: &str, key: &'static str) -> Result<Option<bool>, FlagError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "a boolean" }),
    }
}

pub(crate) fn opt_array<'v>(obj: &'v Map<String, Value>, at: &str, key: &'static str) -> Result<Option<&'v Vec<Value>>, FlagError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(FlagError::WrongType { at: at.to_string(), key, expected: "an array" }),
    }
}

/// A scalar's text, as a context value of the same JSON would be spelled.
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn text_list(obj: &Map<String, Value>, at: &str, key: &'static str) -> Result<Vec<String>, FlagError> {
    const EXPECTED: &str = "an array of strings, numbers or booleans";
    let list = obj.get(key).ok_or(FlagError::MissingKey { at: at.to_string(), key })?;
    let list = list.as_array().ok_or(FlagError::WrongType { at: at.to_string(), key, expected: EXPECTED })?;
    list.iter().map(|v| scalar_text(v).ok_or(FlagError::WrongType { at: at.to_string(), key, expected: EXPECTED })).collect()
}

pub(crate) fn stickiness(obj: &Map<String, Value>, at: &str) -> Result<Option<Stickiness>, FlagError> {
    match non_empty_string(obj, at, "stickiness")? {
        None => Ok(None),
        Some("default") => Ok(Some(Stickiness::Default)),
        Some("random") => Err(FlagError::RandomStickiness { at: at.to_string() }),
        Some(a) => Ok(Some(Stickiness::Attr(Attr::new(a)))),
    }
}

pub(crate) fn compile_rule(flag_key: &str, v: &Value, at: &str) -> Result<Rule, FlagError> {
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

pub(crate) fn compile_constraint(v: &Value, at: &str) -> Result<Constraint, FlagError> {
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
            let value = obj["value"].as_f64().filter(|x| x.is_finite()).ok_or(FlagError::NotANumber { at: at.into(), op: op.name() })?;
            Test::Num { cmp: op.comparison(), value }
        }
        Op::SemverEq | Op::SemverGt | Op::SemverGte | Op::SemverLt | Op::SemverLte => {
            let text = match &obj["value"] {
                Value::String(s) => s.as_str(),
                _ => return Err(FlagError::WrongType { at: at.into(), key: "value", expected: "a semver string" }),
            };
            let s =
                Semver::parse(text).ok_or_else(|| FlagError::InvalidSemver { at: at.into(), op: op.name(), value: text.to_string() })?;
            let value = OwnedSemver { major: s.major, minor: s.minor, patch: s.patch, pre: s.pre.to_string() };
            Test::Semver { cmp: op.comparison(), value }
        }
    };
    Ok(Constraint { op, attr: Attr::new(attribute), test, negate: matches!(op, Op::NotIn | Op::Neq), inverted })
}

pub(crate) fn compile_rollout(flag_key: &str, v: &Value, at: &str) -> Result<Rollout, FlagError> {
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
pub(crate) fn compile_variants(
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
                let attr = non_empty_string(oobj, &oat, "attribute")?.ok_or(FlagError::MissingKey { at: oat.clone(), key: "attribute" })?;
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
