//! The evaluator's unit tests (pure).
#![allow(unused_imports)]

use super::bench::*;
use super::compile::*;
use super::constraint::*;
use super::context::*;
use super::core::*;
use super::defs::*;
use super::rollout::*;
use super::semver::*;
use crate::hash::murmur3_32;
use serde_json::json;
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

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
    check(
        f,
        &rules("Feature.A3", json!([r(100)])),
        &[
            ("Feature.A3 should be enabled for user on context", json!({"userId": "123"}), true),
            ("Feature.A3 should be disabled when no user on context", json!({}), false),
        ],
    );
    check(
        f,
        &rules("Feature.B3", json!([r(50)])),
        &[
            ("Feature.B3 should be enabled for userId=122", json!({"userId": "122"}), true),
            ("Feature.B3 should be disabled for userId=155", json!({"userId": "155"}), false),
        ],
    );
    check(f, &rules("Feature.C3", json!([r(0)])), &[("Feature.C3 should be disabled", json!({"userId": "122"}), false)]);
    check(
        f,
        &rules("Feature.D3", json!([r(0), {}])),
        &[("Feature.D3 should be enabled for all because of default strategy", json!({}), true)],
    );
}

#[test]
fn spec_04_gradual_rollout_session_id() {
    let f = "04-gradual-rollout-session-id-strategy.json";
    let r = |p: u32| json!({"rollout": {"percentage": p, "stickiness": "session_id", "group_id": "AB12A"}});
    check(
        f,
        &rules("Feature.A4", json!([r(100)])),
        &[
            ("Feature.A4 should be enabled for user on context", json!({"sessionId": "123"}), true),
            ("Feature.A4 should be disabled when no user on context", json!({}), false),
        ],
    );
    check(
        f,
        &rules("Feature.B4", json!([r(50)])),
        &[
            ("Feature.B4 should be enabled for sessionId=122", json!({"sessionId": "122"}), true),
            ("Feature.B4 should be disabled for sessionId=155", json!({"sessionId": "155"}), false),
        ],
    );
    check(f, &rules("Feature.C4", json!([r(0)])), &[("Feature.C4 should be disabled", json!({"sessionId": "122"}), false)]);
    check(
        f,
        &rules("Feature.D4", json!([r(0), {}])),
        &[("Feature.D4 should be enabled for all because of default strategy", json!({}), true)],
    );
}

#[test]
fn spec_07_multiple_strategies() {
    let f = "07-multiple-strategies.json";
    let zero = json!({"rollout": {"percentage": 0}});
    let user_123 = json!({"constraints": [{"attribute": "user_id", "op": "in", "values": ["123"]}]});
    check(f, &rules("Feature.multiStrategies.A", json!([zero, {}])), &[("Feature.multiStrategies.A should be enabled", json!({}), true)]);
    check(
        f,
        &rules("Feature.multiStrategies.B", json!([zero, user_123])),
        &[
            ("Feature.multiStrategies.B disabled for unknonw user", json!({}), false),
            ("Feature.multiStrategies.B enabled for user=123", json!({"userId": "123"}), true),
        ],
    );
    check(
        f,
        &rules("Feature.multiStrategies.C", json!([zero, user_123, zero])),
        &[
            ("Feature.multiStrategies.C disabled for unknown users", json!({}), false),
            ("Feature.multiStrategies.C disabled for user=22", json!({"userId": "22"}), false),
            ("Feature.multiStrategies.C enabled for user=123", json!({"userId": "123"}), true),
        ],
    );
}

#[test]
fn spec_10_flexible_rollout() {
    let f = "10-flexible-rollout-strategy.json";
    let flex = |key: &str, p: u32, s: &str| rules(key, json!([{"rollout": {"percentage": p, "stickiness": s, "group_id": key}}]));
    check(
        f,
        &flex("Feature.flexibleRollout.100", 100, "default"),
        &[("Feature.flexibleRollout.100 should always be enabled", json!({}), true)],
    );
    check(
        f,
        &flex("Feature.flexibleRollout.10", 10, "default"),
        &[
            ("Feature.flexibleRollout.10 should be enabled for userId=174", json!({"userId": "174"}), true),
            ("Feature.flexibleRollout.10 should be disabled for userId=499", json!({"userId": "499"}), false),
            ("Feature.flexibleRollout.10 should be enabled for sessionId=174", json!({"sessionId": "174"}), true),
            ("Feature.flexibleRollout.10 should be disabled for sessionId=499", json!({"sessionId": "499"}), false),
        ],
    );
    check(
        f,
        &flex("Feature.flexibleRollout.userId.55", 55, "userId"),
        &[
            ("Feature.flexibleRollout.userId.55 should be enabled for userId=25", json!({"userId": "25"}), true),
            ("Feature.flexibleRollout.userId.55 should be disabled for sessionId=25", json!({"sessionId": "25"}), false),
            ("Feature.flexibleRollout.userId.55 should be disabled if no userId in context", json!({}), false),
        ],
    );
    check(
        f,
        &flex("Feature.flexibleRollout.sessionId.42", 42, "sessionId"),
        &[("Feature.flexibleRollout.sessionId.42 should be enabled for sessionId=147", json!({"sessionId": "147"}), true)],
    );
    check(
        f,
        &flex("Feature.flexibleRollout.0", 0, "default"),
        &[("Feature.flexibleRollout.0 should be disbaled for rollout=0", json!({"sessionId": "147", "userId": "12"}), false)],
    );
}

#[test]
fn spec_12_custom_stickiness() {
    let f = "12-custom-stickiness.json";
    // the spec nests customField under "properties"; quantops contexts are flat
    let key50 = "Feature.flexible.rollout.custom.stickiness_50";
    let f50 = rules(key50, json!([{"rollout": {"percentage": 50, "stickiness": "customField", "group_id": key50}}]));
    check(
        f,
        &f50,
        &[
            ("Feature.flexible.rollout.custom.stickiness_50 should not be enabled without custom field", json!({}), false),
            ("Feature.flexible.rollout.custom.stickiness_50 should not enabled for customField=402", json!({"customField": "402"}), false),
            ("Feature.flexible.rollout.custom.stickiness_50 should be enabled for customField=388", json!({"customField": "388"}), true),
            ("Feature.flexible.rollout.custom.stickiness_50 should be enabled for customField=39", json!({"customField": "39"}), true),
        ],
    );
    let key100 = "Feature.flexible.rollout.custom.stickiness_100";
    let v = |name: &str| json!({"name": name, "weight": 25, "stickiness": "customField", "payload": {"type": "string", "value": "val1"}});
    let f100 = compile(
        key100,
        json!({
            "environments": {"production": true},
            "rules": [{"rollout": {"percentage": 100, "stickiness": "customField", "group_id": key100}}],
            "variants": [v("blue"), v("red"), v("green"), v("yellow")]
        }),
    );
    check(
        f,
        &f100,
        &[(
            "Feature.flexible.rollout.custom.stickiness_100 should be enabled without field defined for 100%",
            json!({"customField": "any_value"}),
            true,
        )],
    );
    check_variants(
        f,
        &f100,
        &[
            ("Feature.flexible.rollout.custom.stickiness_100 and customField=616 yields blue", json!({"customField": "616"}), Some("blue")),
            ("Feature.flexible.rollout.custom.stickiness_100 and customField=503 yields red", json!({"customField": "503"}), Some("red")),
            (
                "Feature.flexible.rollout.custom.stickiness_100 and customField=438 yields green",
                json!({"customField": "438"}),
                Some("green"),
            ),
            (
                "Feature.flexible.rollout.custom.stickiness_100 and customField=44 yields yellow",
                json!({"customField": "44"}),
                Some("yellow"),
            ),
        ],
    );
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
    assert_eq!(
        (ev.value, ev.variant, ev.payload),
        (true, Some("variant1"), Some(&val("val1"))),
        "{f}: Feature.Variants.A should be enabled"
    );

    let b = compile("Feature.Variants.B", json!({"environments": on, "variants": [variant(1, 1), variant(2, 1)]}));
    check_variants(
        f,
        &b,
        &[
            ("Feature.Variants.B should give variant2 for user 2", json!({"userId": "2"}), Some("variant2")),
            ("Feature.Variants.B should give variant 1 for user 0", json!({"userId": "0"}), Some("variant1")),
        ],
    );
    let c = compile("Feature.Variants.C", json!({"environments": on, "variants": [variant(1, 33), variant(2, 33), variant(3, 33)]}));
    check_variants(
        f,
        &c,
        &[
            ("Feature.Variants.C should return variant1", json!({"userId": "232"}), Some("variant1")),
            ("Feature.Variants.C should return variant2", json!({"userId": "607"}), Some("variant2")),
            ("Feature.Variants.C should return variant3", json!({"userId": "656"}), Some("variant3")),
        ],
    );
    let d = compile("Feature.Variants.D", json!({"environments": on, "variants": [variant(1, 1), variant(2, 49), variant(3, 50)]}));
    check_variants(
        f,
        &d,
        &[
            ("Feature.Variants.D should return variant1", json!({"userId": "712"}), Some("variant1")),
            ("Feature.Variants.D should return variant2", json!({"userId": "525"}), Some("variant2")),
            ("Feature.Variants.D should return variant3", json!({"userId": "537"}), Some("variant3")),
        ],
    );
    let mut v1 = variant(1, 33);
    v1["overrides"] = json!([{"attribute": "userId", "values": ["132", "61"]}]);
    let od = compile("Feature.Variants.override.D", json!({"environments": on, "variants": [v1, variant(2, 33), variant(3, 34)]}));
    check_variants(
        f,
        &od,
        &[
            ("Feature.Variants.override.D should return variant1 for user 132", json!({"userId": "132"}), Some("variant1")),
            ("Feature.Variants.override.D should return variant1 for user 61", json!({"userId": "61"}), Some("variant1")),
            ("Feature.Variants.override.D should return variant2 for user 388", json!({"userId": "388"}), Some("variant2")),
        ],
    );
    assert_eq!(od.evaluate(PROD, &json!({"userId": "132"})).reason, Reason::TargetingMatch);
    assert_eq!(od.evaluate(PROD, &json!({"userId": "388"})).reason, Reason::Split);

    let e = compile("Feature.Variants.E", json!({"environments": {"production": false}, "rules": [{}], "variants": [variant(1, 1)]}));
    let ev = e.evaluate(PROD, &json!({"userId": "0"}));
    assert_eq!((ev.value, ev.variant, ev.reason), (false, None, Reason::Disabled), "{f}: Feature.Variants.E should be disabled");

    let empty = compile("Feature.Variants.F", json!({"environments": on, "rules": [{}], "variants": []}));
    let ev = empty.evaluate(PROD, &json!({"userId": "0"}));
    assert_eq!((ev.value, ev.variant), (true, None), "{f}: Feature.Variants.F should be disabled when variants are empty");

    let g = compile(
        "Feature.Variants.G",
        json!({
            "environments": on,
            "rules": [{"rollout": {"percentage": 0, "group_id": "feature-variant-g"}}],
            "variants": [variant(1, 1)]
        }),
    );
    let ev = g.evaluate(PROD, &json!({"userId": "0"}));
    assert_eq!((ev.value, ev.variant, ev.reason), (false, None, Reason::Default), "{f}: Feature.Variants.G");

    let h = compile(
        "Feature.Variants.H",
        json!({
            "environments": on, "rules": [{}],
            "variants": [{"name": "variant1", "weight": 1, "payload": {"type": "number", "value": "1.2"}}]
        }),
    );
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
    let three =
        compile("toggleName", json!({"environments": {"production": true}, "variants": [v(1, 1, None), v(2, 1, None), v(3, 1, None)]}));
    check_variants(
        "variants.test.ts",
        &three,
        &[
            ("selectVariant should select on 3 variants", json!({"userId": "0"}), Some("variant1")),
            ("selectVariant should select on 3 variants", json!({"userId": "zxa"}), Some("variant2")),
            ("selectVariant should select on 3 variants", json!({"userId": "ya"}), Some("variant3")),
        ],
    );
    let org = Some("organization");
    let four = compile(
        "toggleName",
        json!({
            "environments": {"production": true},
            "variants": [v(1, 25, org), v(2, 25, org), v(3, 25, org), v(4, 25, org)]
        }),
    );
    check_variants(
        "variants.test.ts",
        &four,
        &[
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "1430"}), Some("variant1")),
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "125"}), Some("variant2")),
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "930"}), Some("variant3")),
            ("selectVariant should use variant stickiness for many variants", json!({"organization": "381"}), Some("variant4")),
        ],
    );
}

#[test]
fn spec_16_strategy_variants() {
    let f = "16-strategy-variants.json";
    let on = json!({"production": true});
    let flex = json!({"percentage": 100, "stickiness": "default", "group_id": "a"});
    let dev = json!([{"attribute": "environment", "op": "in", "values": ["dev"]}]);
    let vv = |name: &str, value: &str| json!({"name": name, "weight": 1, "payload": val(value)});

    let with_constraint = compile(
        "Feature.strategy.variant.with.constraint",
        json!({
            "environments": on,
            "rules": [{"rollout": flex, "constraints": dev, "variants": [vv("variantName", "variantValue")]}]
        }),
    );
    check_variants(
        f,
        &with_constraint,
        &[
            ("Feature.strategy.variant should return variant on enabled toggle", json!({"environment": "dev"}), Some("variantName")),
            ("Feature.strategy.variant should return disabled variant on disabled toggle", json!({"environment": "not-dev"}), None),
        ],
    );
    assert!(!with_constraint.evaluate(PROD, &json!({"environment": "not-dev"})).value);

    let overrides_feature = compile(
        "Feature.strategy.variant.overrides.feature.variant",
        json!({
            "environments": on,
            "rules": [{"rollout": flex, "constraints": dev, "variants": [vv("variantName", "variantValue")]}],
            "variants": [vv("featureVariant", "willBeIgnored")]
        }),
    );
    check_variants(
        f,
        &overrides_feature,
        &[(
            "Feature.strategy.variant.overrides.feature.variant should override feature variant",
            json!({"environment": "dev"}),
            Some("variantName"),
        )],
    );

    let multiple = compile(
        "Feature.strategy.multiple.variants",
        json!({
            "environments": on,
            "rules": [{"rollout": flex, "variants": [vv("variantNameA", "variantValueA"), vv("variantNameB", "variantValueB")]}]
        }),
    );
    check_variants(
        f,
        &multiple,
        &[
            ("Feature.strategy.multiple.variants should choose first variant", json!({"userId": "5"}), Some("variantNameA")),
            ("Feature.strategy.multiple.variants should choose second variant", json!({"userId": "0"}), Some("variantNameB")),
        ],
    );

    let empty = compile("Feature.strategy.empty.variants", json!({"environments": on, "rules": [{"rollout": flex, "variants": []}]}));
    let ev = empty.evaluate(PROD, &json!({}));
    assert_eq!((ev.value, ev.variant), (true, None), "{f}: Feature.strategy.empty.variants should return disabled variant");

    let fallback = compile(
        "Feature.strategy.variant.fallback",
        json!({
            "environments": on,
            "rules": [{"rollout": flex}],
            "variants": [vv("featureVariant", "fallbackValue")]
        }),
    );
    check_variants(
        f,
        &fallback,
        &[("Feature.strategy.variant.fallback should fall back to feature variants", json!({}), Some("featureVariant"))],
    );

    let numeric = compile(
        "Feature.strategy.numeric.variants",
        json!({
            "environments": on,
            "rules": [{"rollout": flex, "variants": [
                {"name": "variantNameA", "weight": 1, "payload": {"type": "number", "value": "1.2"}},
                {"name": "variantNameB", "weight": 1, "payload": {"type": "number", "value": "1"}}
            ]}]
        }),
    );
    let ev = numeric.evaluate(PROD, &json!({"userId": "0"}));
    assert_eq!(ev.variant, Some("variantNameB"), "{f}: Feature.strategy.numeric.variants should choose second variant");
    assert_eq!(ev.payload, Some(&json!({"type": "number", "value": "1"})));

    let base = compile(
        "Feature.strategy.no.strategy.variants",
        json!({
            "environments": on,
            "rules": [{"rollout": flex, "variants": []}],
            "variants": [{"name": "variantNameA", "weight": 1, "payload": {"type": "number", "value": "1"}}]
        }),
    );
    check_variants(
        f,
        &base,
        &[("Feature.strategy.no.strategy.variants should fall back to base variants", json!({"userId": "0"}), Some("variantNameA"))],
    );

    let sticky = compile(
        "Feature.strategy.variants.stickiness",
        json!({
            "environments": on,
            "rules": [{"rollout": {"percentage": 100, "stickiness": "clientId", "group_id": "a"},
                       "variants": [vv("variantNameA", "variantValueA"), vv("variantNameB", "variantValueB")]}]
        }),
    );
    check_variants(
        f,
        &sticky,
        &[
            (
                "Feature.strategy.variants.stickiness should inherit stickiness from the strategy - first variant",
                json!({"clientId": "1"}),
                Some("variantNameA"),
            ),
            (
                "Feature.strategy.variants.stickiness should inherit stickiness from the strategy - second variant",
                json!({"clientId": "2"}),
                Some("variantNameB"),
            ),
        ],
    );
}

#[test]
fn spec_09_and_11_strategy_constraints() {
    let f = "09-strategy-constraints.json";
    let env_in = |values: Value| json!({"attribute": "environment", "op": "in", "values": values});
    check(
        f,
        &constraint(env_in(json!(["dev"]))),
        &[
            ("Feature.constraints.simple should not be enabled in default environment", json!({"environment": "default"}), false),
            ("Feature.constraints.simple should be enabled in dev environment", json!({"environment": "dev"}), true),
        ],
    );
    check(
        f,
        &constraint(env_in(json!(["dev", "stage", "prod"]))),
        &[
            ("Feature.constraints.list should be enabled in stage environment", json!({"environment": "stage"}), true),
            ("Feature.constraints.list should NOT be enabled in qa environment", json!({"environment": "qa"}), false),
        ],
    );
    let multi = rules(
        "Feature.constraints.multi",
        json!([{"constraints": [
            env_in(json!(["prod"])),
            {"attribute": "userId", "op": "in", "values": ["1", "2", "3"]},
            {"attribute": "appName", "op": "not_in", "values": ["web", "sun-app"]}
        ]}]),
    );
    check(
        f,
        &multi,
        &[
            ("Feature.constraints.multi should be enabled in prod for user 2", json!({"environment": "prod", "userId": "2"}), true),
            ("Feature.constraints.multi should NOT be enabled for unknown user", json!({"environment": "prod"}), false),
            (
                "Feature.constraints.multi should NOT be enabled appName=web",
                json!({"environment": "prod", "userId": "2", "appName": "web"}),
                false,
            ),
        ],
    );
    let dual = rules(
        "Feature.constraints.dual",
        json!([{"constraints": [
            env_in(json!(["prod", "dev"])),
            {"attribute": "environment", "op": "not_in", "values": ["dev", "qa"]}
        ]}]),
    );
    check(
        f,
        &dual,
        &[
            ("Feature.constraints.dual should be enabled in prod", json!({"environment": "prod"}), true),
            ("Feature.constraints.dual should not be enabled in dev", json!({"environment": "dev"}), false),
        ],
    );
    let two = rules(
        "Feature.constraints.multiple.strategies",
        json!([
            {"constraints": [{"attribute": "userId", "op": "in", "values": ["123"]}]},
            {"constraints": [{"attribute": "userId", "op": "in", "values": ["456"]}]}
        ]),
    );
    check(f, &two, &[("Constraint should work with the latter strategy", json!({"userId": "456"}), true)]);

    let f = "11-strategy-constraints-edge-cases.json";
    check(
        f,
        &constraint(env_in(json!([]))),
        &[
            ("Feature.constraints.no_value should not be enabled in default environment", json!({"environment": "default"}), false),
            ("Feature.constraints.no_value should not be enabled in empty environment", json!({}), false),
        ],
    );
    check(
        f,
        &constraint(json!({"attribute": "environment", "op": "not_in", "values": []})),
        &[
            ("Feature.constraints.no_values_NOT_IN should be enabled in default environment", json!({"environment": "default"}), true),
            ("Feature.constraints.no_values_NOT_IN should be enabled in empty environment", json!({}), true),
        ],
    );
    check(
        f,
        &rules("Feature.constraints.empty", json!([{"constraints": []}])),
        &[
            ("Feature.constraints.empty should be enabled", json!({"environment": "default"}), true),
            ("Feature.constraints.empty should be enabled for empty env", json!({}), true),
        ],
    );
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
    check(
        f,
        &c("customField", "str_starts_with", json!(["some-string"]), json!({})),
        &[
            ("F1.startsWith should be enabled", json!({"customField": "some-string-is-cool"}), true),
            ("F1.startsWith should be disabled", json!({"customField": "some2-is-cool-string"}), false),
        ],
    );
    check(
        f,
        &c("customField", "str_starts_with", json!(["e1", "e2"]), json!({})),
        &[
            ("F2.startsWith.multiple should be enabled", json!({"customField": "e2 cool"}), true),
            ("F2.startsWith.multiple should be disabled", json!({"customField": "cool e1"}), false),
        ],
    );
    check(
        f,
        &c("customField", "str_starts_with", json!(["TEST"]), json!({"case_insensitive": true})),
        &[
            ("F2.startsWith.caseInsensitve should be enabled", json!({"customField": "test@example.com"}), true),
            ("F2.startsWith.caseInsensitve should handle various cases when enabled", json!({"customField": "TEsT@example.com"}), true),
        ],
    );
    check(
        f,
        &c("email", "str_ends_with", json!(["some-email.com"]), json!({})),
        &[
            ("F3.endsWith should be enabled", json!({"email": "test@some-email.com"}), true),
            ("F3.endsWith should be disabled when casing is incorrect", json!({"email": "test@some-EMAIL.com"}), false),
            ("F3.endsWith should be disabled", json!({"email": "test@another-email.com"}), false),
        ],
    );
    check(
        f,
        &c("email", "str_ends_with", json!(["some-email.com"]), json!({"case_insensitive": true})),
        &[("F3.endsWith.ignoringCase should be enabled", json!({"email": "test@SOME-EMAIL.com"}), true)],
    );
    check(
        f,
        &c("email", "str_contains", json!(["email"]), json!({})),
        &[
            ("F4.contains should be enabled", json!({"email": "test@some-email.com"}), true),
            ("F4.contains should be disabled", json!({"email": "test@another.com"}), false),
        ],
    );
    check(
        f,
        &c("email", "str_contains", json!(["email"]), json!({"inverted": true})),
        &[("F4.contains.inverted should be enabled", json!({"email": "test@another.com"}), true)],
    );
    check(
        f,
        &constraint(json!({"attribute": "customFieldMissing", "op": "in", "values": ["s1"]})),
        &[
            ("F8.missing-field.IN should return false", json!({}), false),
            ("F8.missing-field.IN should return true when present", json!({"customFieldMissing": "s1"}), true),
        ],
    );
    check(
        f,
        &constraint(json!({"attribute": "customFieldMissing", "op": "not_in", "values": ["s1"]})),
        &[
            ("F8.missing-field.NOT_IN should return true", json!({}), true),
            ("F8.missing-field.NOT_IN should return true when null", json!({"customFieldMissing": null}), true),
        ],
    );
    check(
        f,
        &constraint(json!({"attribute": "someValue", "op": "in", "values": ["s1", "s2"], "inverted": true})),
        &[("F9.inverted.IN should return false when present but inverted", json!({"someValue": "s1"}), false)],
    );
    check(
        f,
        &constraint(json!({"attribute": "someValue", "op": "not_in", "values": ["s1", "s2"], "inverted": true})),
        &[("F10.inverted.NOT_IN should return true when present but inverted", json!({"someValue": "s1"}), true)],
    );
}

#[test]
fn spec_13_numeric_operators() {
    let f = "13-constraint-operators.json";
    let n = |op: &str, value: Value, inverted: bool| {
        constraint(json!({"attribute": "someValue", "op": op, "value": value, "inverted": inverted}))
    };
    check(
        f,
        &n("num_eq", json!(12), false),
        &[("F5.numEq", json!({"someValue": "12"}), true), ("F5.numEq works for floats", json!({"someValue": "12.0"}), true)],
    );
    check(
        f,
        &n("num_eq", json!(12.0), false),
        &[
            ("F5.numEq.float works for floats", json!({"someValue": "12.0"}), true),
            ("F5.numEq.float works for integers", json!({"someValue": "12"}), true),
        ],
    );
    check(
        f,
        &n("num_eq", json!(12), true),
        &[
            ("F5.numEq.inverted should be false", json!({"someValue": "12"}), false),
            ("F5.numEq.inverted should be true", json!({"someValue": "13"}), true),
        ],
    );
    check(
        f,
        &n("num_gt", json!(12), false),
        &[("F5.numGT should be true", json!({"someValue": "13"}), true), ("F5.numGT should be false", json!({"someValue": "12"}), false)],
    );
    check(
        f,
        &n("num_gte", json!(12), false),
        &[
            ("F5.numGTE should be true when equal", json!({"someValue": "12"}), true),
            ("F5.numGTE should be true when larger", json!({"someValue": "13"}), true),
            ("F5.numGTE should be false when lower", json!({"someValue": "11"}), false),
        ],
    );
    check(
        f,
        &n("num_lte", json!(12), false),
        &[
            ("F5.numLTE should be false when higher", json!({"someValue": "13"}), false),
            ("F5.numLTE should be true when equal", json!({"someValue": "12"}), true),
            ("F5.numLTE should be true when lower", json!({"someValue": "0"}), true),
        ],
    );
    check(
        f,
        &n("num_lt", json!(12), false),
        &[
            ("F5.numLT should be true when lower", json!({"someValue": "0"}), true),
            ("F5.numLT should be false when equal", json!({"someValue": "12"}), false),
        ],
    );
    let range = rules(
        "F6.number-range",
        json!([{"constraints": [
            {"attribute": "someValue", "op": "num_gt", "value": 12},
            {"attribute": "someValue", "op": "num_lt", "value": 16}
        ]}]),
    );
    check(
        f,
        &range,
        &[
            ("F6.number-range should be false when not in range", json!({"someValue": "11"}), false),
            ("F6.number-range should be true when in range", json!({"someValue": "14"}), true),
        ],
    );
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
    check(
        f,
        &s("semver_eq", "1.2.2"),
        &[("F8.semverEQ should be enabled", v("1.2.2"), true), ("F8.semverEQ should be disabled", v("1.2.0"), false)],
    );
    check(
        f,
        &s("semver_gt", "1.2.2"),
        &[("F8.semverGT should be enabled", v("1.2.3"), true), ("F8.semverGT should be disabled", v("1.2.0"), false)],
    );
    check(
        f,
        &s("semver_gte", "1.2.2"),
        &[
            ("F8.semverGTE should be enabled", v("1.2.2"), true),
            ("F8.semverGTE should be enabled for greater", v("1.2.3"), true),
            ("F8.semverGTE should be disabled", v("1.2.1"), false),
        ],
    );
    check(
        f,
        &s("semver_lt", "1.2.2"),
        &[("F8.semverLT should be enabled", v("1.2.1"), true), ("F8.semverLT should be disabled", v("1.2.3"), false)],
    );
    check(
        f,
        &s("semver_lte", "1.2.2"),
        &[
            ("F8.semverLTE should be enabled", v("1.2.2"), true),
            ("F8.semverLTE should be enabled for less", v("1.2.1"), true),
            ("F8.semverLTE should be disabled", v("1.2.3"), false),
        ],
    );
    check(
        f,
        &s("semver_gt", "2.0.0-alpha.1"),
        &[
            ("F8.semverAlphaGT is less than beta", v("2.0.0-beta.1"), true),
            ("F8.semverAlphaGT operator is less than release", v("2.0.0"), true),
        ],
    );
    check(
        f,
        &s("semver_lt", "2.0.0-alpha.1"),
        &[
            ("F8.semverAlphaLT is less than beta", v("2.0.0-beta.1"), false),
            ("F8.semverAlphaLT is greater than old beta", v("1.9.1-beta.1"), true),
        ],
    );
    check(
        f,
        &s("semver_lt", "2.0.0-alpha.3"),
        &[
            ("F8.semverAlphaVersioning alpha.1 is less than alpha.3", v("2.0.0-alpha.1"), true),
            ("F8.semverAlphaVersioning alpha.4 is greater than alpha.3", v("2.0.0-alpha.4"), false),
        ],
    );
    check(f, &s("semver_gt", "2.0.0-alpha"), &[("F8.alphaUnnumbered - unnumbered is LT than numbered", v("2.0.0-alpha.1"), true)]);
    check(
        f,
        &s("semver_gt", "2.0.0-rc"),
        &[
            ("F8.releaseCandidate - alpha is not greater than rc", v("2.0.0-alpha.1"), false),
            ("F8.releaseCandidate - beta is not greater tha rc", v("2.0.0-beta.1"), false),
            ("F8.releaseCandidate - release is greater than rc", v("2.0.0"), true),
        ],
    );
    // the spec's F8.invalidSemverWithLeadingV has "v2.0.0" as the constraint value: quantops
    // rejects it when the flag is written; a context value like it never matches
    check(
        f,
        &s("semver_eq", "2.0.0"),
        &[
            ("F8.invalidSemverWithLeadingV - invalid semver resolves to false", v("v2.0.0"), false),
            ("F8.invalidSemverWithLeadingV - broken semver resolves to false", v("not a semver"), false),
        ],
    );
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
    assert_eq!(Environment::parse("prod").unwrap_err().to_string(), "unknown environment \"prod\" (expected local, staging or production)");
    for env in Environment::ALL {
        assert_eq!(Environment::parse(env.name()), Ok(env));
    }
}

#[test]
fn rules_are_ordered_and_fall_through() {
    let f = rules(
        "order",
        json!([
            {"name": "desk-rollout", "constraints": [{"attribute": "role", "op": "eq", "value": "desk"}],
             "rollout": {"percentage": 0}},
            {"name": "desk", "constraints": [{"attribute": "role", "op": "eq", "value": "desk"}],
             "variants": [{"name": "second", "weight": 1}]},
            {"name": "everyone", "rollout": {"percentage": 100}, "variants": [{"name": "third", "weight": 1}]}
        ]),
    );
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
    let hidden = compile(
        "h",
        json!({"environments": on, "variants": [
            {"name": "a", "weight": 1}, {"name": "b", "weight": 0, "overrides": [{"attribute": "role", "values": ["desk"]}]}
        ]}),
    );
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
    let names: Vec<&str> =
        [Reason::Static, Reason::TargetingMatch, Reason::Split, Reason::Disabled, Reason::Default].iter().map(|r| r.as_str()).collect();
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
    let f = compile(
        "det",
        json!({
            "environments": {"production": true},
            "rules": [{"rollout": {"percentage": 40, "stickiness": "user_id", "group_id": "g"},
                       "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}, {"name": "c", "weight": 3}]}]
        }),
    );
    let again = compile(
        "det",
        json!({
            "environments": {"production": true},
            "rules": [{"rollout": {"percentage": 40, "stickiness": "user_id", "group_id": "g"},
                       "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}, {"name": "c", "weight": 3}]}]
        }),
    );
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
            let want = if target <= 1 {
                "a"
            } else if target <= 3 {
                "b"
            } else {
                "c"
            };
            assert_eq!(a.variant, Some(want));
        }
    }
}

#[test]
#[allow(clippy::int_plus_one)] // Unleash's formula as written
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
    assert_eq!(
        rule_error(json!({"constraints": [{"attribute": "", "op": "in", "values": []}]})),
        "rule 1 constraint 1: \"attribute\" must be a non-empty string"
    );
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
    assert_eq!(
        rule_error(json!({"constraints": [{"attribute": "a", "op": "IN", "values": []}]})),
        "rule 1 constraint 1: unknown op \"IN\""
    );
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
    assert_eq!(
        rule_error(json!({"variants": [{"name": "a", "weight": -1}]})),
        "rule 1 variant 1: weight -1 must be an integer in 0..1000000"
    );
    assert_eq!(
        rule_error(json!({"variants": [{"name": "a", "weight": 0.5}]})),
        "rule 1 variant 1: weight 0.5 must be an integer in 0..1000000"
    );
    assert_eq!(
        rule_error(json!({"variants": [{"name": "a", "weight": "1"}]})),
        "rule 1 variant 1: weight \"1\" must be an integer in 0..1000000"
    );
    assert_eq!(
        rule_error(json!({"variants": [{"name": "a", "weight": 1000001}]})),
        "rule 1 variant 1: weight 1000001 must be an integer in 0..1000000"
    );
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
            (role == "desk" || role == "admin") && murmur3_32(format!("bench.flag:{user}").as_bytes(), 0) % 100 < 25
        })
        .count() as u64;
    assert_eq!(enabled, want);
    assert!(enabled > 0 && enabled < n);
}
