//! The local sentence model alone, outside PostgreSQL (bench/model.sh): embeds every line of a
//! file with the model in a folder on a pool of `threads`, once to warm up and then three times;
//! prints one JSON line with the best run: {engine, threads, sentences, seconds, per_s}.
//!
//!     cargo run --release --example model_bench -- .cache/models/all-MiniLM-L6-v2 bench/model/finance_1000.txt 1

use std::sync::atomic::AtomicBool;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, file) = (&args[1], &args[2]);
    let threads: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let model = quantops::embedding::model::Model::load(std::path::Path::new(dir)).expect("the model loads");
    let text = std::fs::read_to_string(file).expect("the sentences file");
    let sentences: Vec<&str> = text.lines().collect();
    let pool = quantops::threads::build(threads, "bench").expect("a pool");
    let never = AtomicBool::new(false);
    model.embed(&sentences[..sentences.len().min(64)], &pool, &never).unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let v = model.embed(&sentences, &pool, &never).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(v.len(), sentences.len());
    }
    println!(
        "{}",
        serde_json::json!({ "engine": "quantops (pure Rust)", "threads": threads, "sentences": sentences.len(),
                            "seconds": (best * 1e4).round() / 1e4, "per_s": (sentences.len() as f64 / best * 10.0).round() / 10.0 })
    );
}
