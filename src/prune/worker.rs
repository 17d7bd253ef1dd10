//! The scheduler's prune job: starts (or resumes) a run of every enabled policy, then moves one
//! batch per transaction until no policy has rows left, so a kill -9 or an immediate shutdown
//! loses at most the batch in flight (which rolls back whole: never half-moved).

use super::store::BATCH;
use crate::schedule::JobOutcome;
use crate::xact::in_transaction;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

fn call(sql: &'static str) -> Result<Value, String> {
    in_transaction(move || Spi::get_one::<JsonB>(sql).ok().flatten().map(|j| j.0).unwrap_or(Value::Null))
}

pub fn run() -> Result<JobOutcome, String> {
    let started = std::time::Instant::now();
    let before = call("select quantops._prune_health()")?;
    in_transaction(|| Spi::run("select quantops._prune_start(null)").map_err(|e| e.to_string()))??;
    let (mut moved, mut batches) = (0i64, 0i64);
    let mut per = serde_json::Map::new();
    loop {
        if crate::runtime::stopping() {
            break;
        }
        let b = in_transaction(|| {
            Spi::get_one_with_args::<JsonB>("select quantops.prune_batch(null, $1)", &[BATCH.into()]).ok().flatten().map(|j| j.0)
        })?
        .ok_or("prune_batch returned nothing")?;
        if b["idle"].as_bool().unwrap_or(true) {
            break;
        }
        let m = b["moved"].as_i64().unwrap_or(0);
        moved += m;
        batches += 1;
        if let Some(p) = b["policy"].as_str() {
            let e = per.entry(p.to_string()).or_insert(json!(0));
            *e = json!(e.as_i64().unwrap_or(0) + m);
        }
    }
    let after = call("select quantops._prune_health()")?;
    Ok(JobOutcome {
        rows: moved,
        details: json!({ "moved": moved, "batches": batches, "by_policy": per,
                         "duration_ms": (started.elapsed().as_secs_f64() * 1000.0).round(),
                         "health_before": before, "health_after": after }),
    })
}
