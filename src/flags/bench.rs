//! The flag benchmark's workload (bench/flags.sh, row R, through examples/flag_bench.rs): the
//! pure evaluator alone, outside PostgreSQL. Not part of the SQL surface.

use super::core::{CompiledFlag, Environment};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

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
