//! The audit trail's SQL surface: agents' and flows' start/finish pairs and verification.

use super::core as chain;
use super::store::{append, load_chain, STREAMS};
use crate::error::SqlError;
use crate::spi::ReportError;
use crate::sql_error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode, Uuid};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{what} must not be null")]
    Null { what: &'static str },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String, hint: Option<&'static str> },
    #[error("no started {kind} with id {id}")]
    UnknownCall { kind: &'static str, id: String },
    #[error("{kind} {id} is already finished")]
    AlreadyFinished { kind: &'static str, id: String },
    #[error("unknown audit stream \"{0}\"")]
    UnknownStream(String),
}

impl SqlError for AuditError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            AuditError::Null { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            AuditError::Invalid { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            AuditError::UnknownCall { .. } | AuditError::UnknownStream(_) => ERRCODE_UNDEFINED_OBJECT,
            AuditError::AlreadyFinished { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }
    fn detail(&self) -> Option<String> {
        match self {
            AuditError::UnknownCall { .. } => {
                Some("a finish must name the id that its start returned, and the same caller must finish it".into())
            }
            _ => None,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            AuditError::Invalid { hint, .. } => hint.map(String::from),
            AuditError::UnknownStream(_) => Some("streams are quantops, tool_calls and flow_runs".into()),
            _ => None,
        }
    }
}
sql_error!(AuditError);

#[pg_extern(immutable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _audit_digest(prev: &[u8], payload: &str) -> Vec<u8> {
    chain::chain_hash(prev, payload).to_vec()
}

/// Redacts secret-looking keys and credential-shaped strings from a jsonb value.
#[pg_extern(immutable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn redact_secrets(args: JsonB) -> JsonB {
    JsonB(chain::redact(&args.0))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.redact_secrets(jsonb)', 'authenticated');",
    name = "grant_redact_secrets",
    requires = [redact_secrets]
);

fn check_name(what: &'static str, v: Option<&str>) -> Result<String, AuditError> {
    let v = v.ok_or(AuditError::Null { what })?;
    let t = v.trim();
    if t.is_empty() || t.len() > 200 || t.chars().any(char::is_control) {
        return Err(AuditError::Invalid { what, why: "must be 1 to 200 printable characters".into(), hint: None });
    }
    Ok(t.to_string())
}

#[allow(clippy::too_many_arguments)] // the SQL function's arguments
fn pair(
    kind: &'static str,
    stream: &'static str,
    name: Option<&str>,
    phase: Option<&str>,
    id: Option<Uuid>,
    input: Option<JsonB>,
    outcome: Option<&str>,
    result: Option<JsonB>,
    extra: Value,
) -> Result<Uuid, AuditError> {
    let name = check_name(if kind == "tool call" { "tool" } else { "flow" }, name)?;
    let phase = phase.ok_or(AuditError::Null { what: "phase" })?;
    let input = input.map(|j| j.0).unwrap_or_else(|| json!({}));
    if !input.is_object() {
        return Err(AuditError::Invalid {
            what: "arguments",
            why: "must be a json object".into(),
            hint: Some("pass the call's named arguments, e.g. '{\"symbol\": \"AAPL\"}'"),
        });
    }
    let mut args = json!({ "name": name, "input": input });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            args[k] = v;
        }
    }
    match phase {
        "start" => {
            if outcome.is_some() || result.is_some() {
                return Err(AuditError::Invalid {
                    what: "outcome",
                    why: "a start has no outcome yet".into(),
                    hint: Some("pass outcome and result with phase => 'finish'"),
                });
            }
            let id = id.unwrap_or_else(new_uuid);
            append(stream, &name, &args, "started", None, None, Some(id));
            Ok(id)
        }
        "finish" => {
            let id = id.ok_or(AuditError::Null { what: "call id" })?;
            let outcome = match outcome {
                Some(o @ ("ok" | "error")) => o,
                Some(o) => {
                    return Err(AuditError::Invalid { what: "outcome", why: format!("\"{o}\" is not one of ok, error"), hint: None })
                }
                None => return Err(AuditError::Null { what: "outcome" }),
            };
            // the start must exist and be the caller's own; a call is finished once
            let started: Option<i64> = crate::spi::read_one(
                "select (extract(epoch from pg_catalog.clock_timestamp() - at) * 1000000)::bigint \
                 from quantops.audit_log where stream = $1 and call_id = $2 and outcome = 'started' \
                 and actor is not distinct from quantops.uid() and actor_role = quantops._caller_role()",
                &[stream.into(), id.into()],
            )
            .unwrap_or_else(|e| crate::spi::failed("reading the start of the call", e).report_error());
            let Some(us) = started else {
                return Err(AuditError::UnknownCall { kind, id: id.to_string() });
            };
            let done: Option<bool> = crate::spi::read_one(
                "select true from quantops.audit_log where stream = $1 and call_id = $2 and outcome <> 'started'",
                &[stream.into(), id.into()],
            )
            .unwrap_or_else(|e| crate::spi::failed("reading the end of the call", e).report_error());
            if done.is_some() {
                return Err(AuditError::AlreadyFinished { kind, id: id.to_string() });
            }
            let detail = result.map(|r| r.0);
            append(stream, &name, &args, outcome, detail.as_ref(), Some(us.max(0)), Some(id));
            Ok(id)
        }
        other => Err(AuditError::Invalid { what: "phase", why: format!("\"{other}\" is not one of start, finish"), hint: None }),
    }
}

fn new_uuid() -> Uuid {
    // gen_random_uuid() returns one row, never NULL
    match crate::spi::read_one::<Uuid>("select pg_catalog.gen_random_uuid()", &[]) {
        Ok(Some(u)) => u,
        Ok(None) => crate::error::raise(pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "quantops: gen_random_uuid() returned no value"),
        Err(e) => crate::spi::failed("generating a call id", e).report_error(),
    }
}

/// Logs an agent's tool call as a start/finish pair: the start returns the call id, the finish
/// names it with an outcome. A call that fails is still on record, as a start without a finish
/// or a finish with outcome 'error'.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn log_tool_call(
    tool: Option<&str>,
    phase: default!(Option<&str>, "'start'"),
    call_id: default!(Option<Uuid>, "NULL"),
    arguments: default!(Option<JsonB>, "'{}'"),
    outcome: default!(Option<&str>, "NULL"),
    result: default!(Option<JsonB>, "NULL"),
    agent: default!(Option<&str>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    crate::spi::require_primary("log_tool_call")?;
    let extra = match agent {
        Some(a) => json!({ "agent": check_name("agent", Some(a))? }),
        None => json!({}),
    };
    Ok(pair("tool call", "tool_calls", tool, phase, call_id, arguments, outcome, result, extra)?)
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.log_tool_call(text, text, uuid, jsonb, text, jsonb, text)', 'authenticated');",
    name = "grant_log_tool_call",
    requires = [log_tool_call]
);

/// Logs a flow run (Prefect, cron, a script) as a start/finish pair, like log_tool_call.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn log_flow_run(
    flow: Option<&str>,
    phase: default!(Option<&str>, "'start'"),
    run_id: default!(Option<Uuid>, "NULL"),
    parameters: default!(Option<JsonB>, "'{}'"),
    outcome: default!(Option<&str>, "NULL"),
    result: default!(Option<JsonB>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    crate::spi::require_primary("log_flow_run")?;
    Ok(pair("flow run", "flow_runs", flow, phase, run_id, parameters, outcome, result, json!({}))?)
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.log_flow_run(text, text, uuid, jsonb, text, jsonb)', 'service_role');",
    name = "grant_log_flow_run",
    requires = [log_flow_run]
);

/// Checks the hash chain of one stream, or of all: one row per stream, with the first problem.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn verify_audit(
    stream: default!(Option<&str>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(stream, String),
            name!(rows, i64),
            name!(valid, bool),
            name!(first_bad_seq, Option<i64>),
            name!(problems, i64),
            name!(problem, Option<String>),
        ),
    >,
    ErrorReport,
> {
    let streams: Vec<&str> = match stream {
        None => STREAMS.to_vec(),
        Some(s) if STREAMS.contains(&s) => vec![s],
        Some(s) => return Err(AuditError::UnknownStream(s.to_string()).into()),
    };
    let mut out = Vec::new();
    for s in streams {
        let (rows, head) = load_chain(s);
        let problems = chain::verify_chain(&rows, head);
        let first = problems.iter().min_by_key(|p| p.seq());
        out.push((
            s.to_string(),
            rows.len() as i64,
            problems.is_empty(),
            first.map(|p| p.seq()),
            problems.len() as i64,
            first.map(|p| p.describe()),
        ));
    }
    Ok(TableIterator::new(out))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.verify_audit(text)', 'service_role');",
    name = "grant_verify_audit",
    requires = [verify_audit]
);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn digest_is_sha256_of_prev_and_payload() {
        let hex: Option<String> = Spi::get_one("select encode(quantops._audit_digest(''::bytea, 'abc'), 'hex')").unwrap();
        assert_eq!(hex.as_deref(), Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    }

    #[pg_test]
    fn tool_call_pair_is_chained_and_redacted() {
        let id: Option<pgrx::Uuid> = Spi::get_one(
            "select quantops.log_tool_call('search_memory', arguments => '{\"q\": \"AAPL\", \"api_key\": \"sk-abcdefghijklmnopqrstu\"}')",
        )
        .unwrap();
        let id = id.unwrap();
        Spi::run_with_args(
            "select quantops.log_tool_call('search_memory', phase => 'finish', call_id => $1, outcome => 'ok', result => '{\"rows\": 3}')",
            &[id.into()],
        )
        .unwrap();
        let (n, key): (Option<i64>, Option<String>) = Spi::get_two_with_args(
            "select count(*), max(args->'input'->>'api_key') from quantops.audit_log where call_id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(n, Some(2));
        assert_eq!(key.as_deref(), Some("[redacted]"));
        let valid: Option<bool> = Spi::get_one("select bool_and(valid) from quantops.verify_audit('tool_calls')").unwrap();
        assert_eq!(valid, Some(true));
        let dur: Option<i64> =
            Spi::get_one_with_args("select duration_us from quantops.audit_log where call_id = $1 and outcome = 'ok'", &[id.into()])
                .unwrap();
        assert!(dur.unwrap() >= 0);
    }

    #[pg_test(error = "no started tool call with id 00000000-0000-4000-8000-000000000000")]
    fn finishing_an_unknown_call_is_an_error() {
        Spi::run(
            "select quantops.log_tool_call('x', phase => 'finish', call_id => '00000000-0000-4000-8000-000000000000', outcome => 'ok')",
        )
        .unwrap();
    }

    #[pg_test(error = "quantops.audit_log is append-only")]
    fn audit_rows_cannot_be_deleted_even_by_the_owner() {
        Spi::run("select quantops.log_flow_run('supabase-embedding-refresh')").unwrap();
        Spi::run("delete from quantops.audit_log").unwrap();
    }

    #[pg_test]
    fn an_altered_row_is_detected() {
        // tamper the way only the table's owner can: with the append-only trigger disabled
        // (first, so this test never waits for a lock while holding the chain's head)
        Spi::run("alter table quantops.audit_log disable trigger audit_log_append_only").unwrap();
        Spi::run("select quantops.log_flow_run('scheduled-vector-prune')").unwrap();
        Spi::run("select quantops.log_flow_run('scheduled-vector-prune')").unwrap();
        Spi::run("update quantops.audit_log set args = '{\"name\": \"forged\"}' where stream = 'flow_runs' and seq = 1").unwrap();
        let (valid, first): (Option<bool>, Option<i64>) =
            Spi::get_two("select valid, first_bad_seq from quantops.verify_audit('flow_runs')").unwrap();
        assert_eq!(valid, Some(false));
        assert_eq!(first, Some(1));
    }
}
