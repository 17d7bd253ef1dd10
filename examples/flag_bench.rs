//! The pure Rust flag evaluator alone, outside PostgreSQL (bench/flags.sh, row R): `n`
//! evaluations of a flag with one `in` constraint on `role` and a 25 % rollout on `user_id`,
//! over 1024 prepared JSON contexts (compilation and preparation are not timed). Prints one JSON
//! line: {evaluations, enabled, seconds, per_second, ns_per_evaluation}.
//!
//!     cargo run --release --example flag_bench -- 20000000

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000_000).clamp(1, 1_000_000_000);
    let (enabled, d) = quantops::flags::bench::bench_evaluations(n);
    let s = d.as_secs_f64().max(1e-9);
    println!(
        "{}",
        serde_json::json!({ "evaluations": n, "enabled": enabled, "seconds": s,
                            "per_second": n as f64 / s, "ns_per_evaluation": s * 1e9 / n as f64 })
    );
}
