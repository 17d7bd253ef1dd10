//! Constraints: their operators and how each tests a context value.

use super::context::{Attr, Context, ContextValue};
use super::semver::{OwnedSemver, Semver};
use std::cmp::Ordering;

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

    pub(crate) fn comparison(self) -> Cmp {
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
pub(crate) enum Cmp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    #[inline]
    pub(crate) fn holds(self, o: Ordering) -> bool {
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
pub(crate) enum StrKind {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    /// Sorted and deduplicated for a binary search, or lower-cased for a scan.
    Member {
        values: Vec<String>,
        case_insensitive: bool,
    },
    Text {
        kind: StrKind,
        values: Vec<String>,
        case_insensitive: bool,
    },
    Num {
        cmp: Cmp,
        value: f64,
    },
    Semver {
        cmp: Cmp,
        value: OwnedSemver,
    },
}

/// A validated constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub(crate) op: Op,
    pub(crate) attr: Attr,
    pub(crate) test: Test,
    /// `not_in` and `neq`: negate the membership (so that a missing attribute is not in).
    pub(crate) negate: bool,
    pub(crate) inverted: bool,
}

pub(crate) fn ascii_lower_text_test(kind: StrKind, hay: &[u8], needle: &[u8]) -> bool {
    if needle.len() > hay.len() {
        return false;
    }
    match kind {
        StrKind::StartsWith => hay[..needle.len()].eq_ignore_ascii_case(needle),
        StrKind::EndsWith => hay[hay.len() - needle.len()..].eq_ignore_ascii_case(needle),
        StrKind::Contains => hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle)),
    }
}

pub(crate) fn text_test(kind: StrKind, hay: &str, needle: &str) -> bool {
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
                            values.contains(&lower)
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
            Test::Num { cmp, value: rhs } => {
                value.and_then(ContextValue::as_f64).and_then(|x| x.partial_cmp(rhs)).is_some_and(|o| cmp.holds(o))
            }
            Test::Semver { cmp, value: rhs } => value.is_some_and(|v| match v {
                ContextValue::Str(s) => Semver::parse(s).is_some_and(|x| cmp.holds(x.precedence(&rhs.view()))),
                _ => false,
            }),
        };
        raw != self.inverted
    }
}
