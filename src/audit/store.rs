//! The audit log's storage: the append that every state-changing quantops function calls, the
//! chain read for verification, and the scheduled verification job.

use super::core::{self as chain, ChainRow};
use crate::schedule::JobOutcome;
use crate::spi::ReportError;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};

pub const STREAMS: &[&str] = &["quantops", "tool_calls", "flow_runs"];

/// Appends one row to an audit stream, in the caller's transaction. The chain trigger fills
/// seq, prev_hash, hash, actor and actor_role.
pub fn append(
    stream: &str,
    action: &str,
    args: &Value,
    outcome: &str,
    detail: Option<&Value>,
    duration_us: Option<i64>,
    call_id: Option<Uuid>,
) {
    let args = JsonB(chain::redact(args));
    let detail = detail.map(|d| JsonB(chain::redact(d)));
    crate::spi::run(
        "appending to the audit log",
        "insert into quantops.audit_log (stream, action, args, outcome, detail, duration_us, call_id) \
         values ($1, $2, $3, $4, $5, $6, $7)",
        &[stream.into(), action.into(), args.into(), outcome.into(), detail.into(), duration_us.into(), call_id.into()],
    );
}

/// Records a state-changing quantops function call that succeeded (`outcome = ok`).
pub fn record_call(action: &str, args: Value, detail: Option<Value>, started: std::time::Instant) {
    let us = started.elapsed().as_micros() as i64;
    append("quantops", action, &args, "ok", detail.as_ref(), Some(us), None);
}

/// Every row of a stream and its head. A failed read is an error, never a verdict: a row read
/// wrongly would look tampered with.
pub fn load_chain(stream: &str) -> (Vec<ChainRow>, Option<i64>) {
    let r = Spi::connect(|c| -> Result<_, pgrx::spi::SpiError> {
        let mut rows = Vec::new();
        let tab = c.select(
            "select seq, quantops._audit_payload(a), prev_hash, hash from quantops.audit_log a \
             where stream = $1 order by seq",
            None,
            &[stream.into()],
        )?;
        for t in tab {
            // every column is NOT NULL
            rows.push(ChainRow {
                seq: t.get::<i64>(1)?.unwrap_or(0),
                payload: t.get::<String>(2)?.unwrap_or_default(),
                prev_hash: t.get::<Vec<u8>>(3)?.unwrap_or_default(),
                hash: t.get::<Vec<u8>>(4)?.unwrap_or_default(),
            });
        }
        let head = c.select("select seq from quantops.audit_heads where stream = $1", None, &[stream.into()])?;
        let head = if head.is_empty() { None } else { head.first().get_one::<i64>()? };
        Ok((rows, head))
    });
    r.unwrap_or_else(|e| crate::spi::failed("reading the audit log", e).report_error())
}

/// The `verify-audit` job: verifies every stream's chain; a broken chain fails the run.
pub fn verify_job() -> Result<JobOutcome, String> {
    let mut rows = 0i64;
    let mut bad = Vec::new();
    for s in STREAMS {
        let (links, head) = load_chain(s);
        rows += links.len() as i64;
        let problems = chain::verify_chain(&links, head);
        if let Some(p) = problems.iter().min_by_key(|p| p.seq()) {
            bad.push(format!("stream {s}: {} problem(s), first: {}", problems.len(), p.describe()));
        }
    }
    if bad.is_empty() {
        Ok(JobOutcome { rows, details: json!({ "streams": STREAMS }) })
    } else {
        Err(format!("audit chain verification failed: {}", bad.join("; ")))
    }
}
