//! Percentage rollouts, weighted variants and rules: the Unleash-compatible bucketing.

use super::constraint::Constraint;
use super::context::{default_stickiness_value, hash_key, Attr, Context};
use super::defs::{ROLLOUT_SEED, VARIANT_SEED};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// rollouts and variants

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stickiness {
    Default,
    Attr(Attr),
}

impl Stickiness {
    pub(crate) fn name(&self) -> &str {
        match self {
            Stickiness::Default => "default",
            Stickiness::Attr(a) => &a.name,
        }
    }
}

/// A validated percentage rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub(crate) percentage: u32,
    pub(crate) stickiness: Stickiness,
    pub(crate) group_id: String,
    /// `"<group_id>:"`
    pub(crate) prefix: Vec<u8>,
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
    #[allow(clippy::int_plus_one)] // Unleash's formula as Unleash writes it: bucket % 100 + 1 <= percentage
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
    pub(crate) overrides: Vec<(Attr, Vec<String>)>,
}

/// A validated, non-empty list of variants with its group id and stickiness.
#[derive(Debug, Clone, PartialEq)]
pub struct Variants {
    pub(crate) variants: Vec<Variant>,
    pub(crate) total_weight: u32,
    pub(crate) stickiness: Stickiness,
    pub(crate) prefix: Vec<u8>,
    /// The only variant with a positive weight, if there is exactly one.
    pub(crate) sole: Option<usize>,
    pub(crate) has_overrides: bool,
}

pub(crate) enum Pick {
    Override(usize),
    Hashed(usize),
    Sole(usize),
    None,
}

impl Variants {
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    pub(crate) fn pick<C: Context + ?Sized>(&self, ctx: &C) -> Pick {
        if self.has_overrides {
            for (i, v) in self.variants.iter().enumerate() {
                let hit =
                    v.overrides.iter().any(|(attr, values)| attr.get(ctx).is_some_and(|x| x.with_text(|s| values.iter().any(|y| y == s))));
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
    pub(crate) constraints: Vec<Constraint>,
    pub(crate) rollout: Option<Rollout>,
    pub(crate) variants: Option<Variants>,
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
