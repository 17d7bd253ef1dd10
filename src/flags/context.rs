//! The evaluation context: a flat JSON object of scalars, read without allocating, and the
//! hashed key of a rollout or a variant list.

use std::fmt::{self, Write as _};

use serde_json::{Map, Number, Value};

use crate::hash::murmur3_32;

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
    pub(crate) fn with_text<R>(self, f: impl FnOnce(&str) -> R) -> R {
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

    pub(crate) fn as_f64(self) -> Option<f64> {
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

pub(crate) fn scalar(v: &Value) -> Option<ContextValue<'_>> {
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
pub(crate) struct StackText {
    pub(crate) buf: [u8; 64],
    pub(crate) len: usize,
}

impl StackText {
    pub(crate) fn new() -> StackText {
        StackText { buf: [0; 64], len: 0 }
    }
    pub(crate) fn as_str(&self) -> &str {
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
pub(crate) struct Attr {
    pub(crate) name: String,
    pub(crate) alias: Option<&'static str>,
}

impl Attr {
    pub(crate) fn new(name: &str) -> Attr {
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
    pub(crate) fn get<'c, C: Context + ?Sized>(&self, ctx: &'c C) -> Option<ContextValue<'c>> {
        match ctx.get(&self.name) {
            Some(v) => Some(v),
            None => self.alias.and_then(|a| ctx.get(a)),
        }
    }
}

/// `user_id`, `session_id`, `remote_address`, each in both spellings.
pub(crate) fn default_stickiness_value<'c, C: Context + ?Sized>(ctx: &'c C, with_address: bool) -> Option<ContextValue<'c>> {
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
pub(crate) fn hash_key(prefix: &[u8], value: &str, seed: u32) -> u32 {
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
