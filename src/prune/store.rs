//! The prune job from SQL (`run_job('prune')`): the whole prune in the caller's transaction,
//! so it is bounded. The worker and `CALL quantops.prune()` commit per batch instead. The SQL
//! surface itself (set_retention, prune_plan, prune_batch, CALL prune, restore_archived) is
//! sql/prune.sql.

use crate::schedule::JobOutcome;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

/// Rows per batch.
pub const BATCH: i32 = 2000;

/// The most rows that run_job('prune') moves in the caller's transaction.
pub const SQL_PRUNE_LIMIT: i64 = 50_000;

/// The `prune` job in the caller's transaction.
pub fn sql_job() -> Result<JobOutcome, String> {
    Spi::run("select quantops._prune_start(null)").map_err(|e| e.to_string())?;
    let (mut moved, mut batches) = (0i64, 0i64);
    while moved < SQL_PRUNE_LIMIT {
        let b = Spi::get_one_with_args::<JsonB>(
            "select quantops.prune_batch(null, $1)",
            &[(BATCH as i64).min(SQL_PRUNE_LIMIT - moved).try_into().unwrap_or(1i32).into()],
        )
        .map_err(|e| e.to_string())?
        .map(|j| j.0)
        .unwrap_or_default();
        if b["idle"].as_bool().unwrap_or(true) {
            break;
        }
        moved += b["moved"].as_i64().unwrap_or(0);
        batches += 1;
    }
    Ok(JobOutcome { rows: moved, details: json!({ "moved": moved, "batches": batches, "limit": SQL_PRUNE_LIMIT }) })
}
