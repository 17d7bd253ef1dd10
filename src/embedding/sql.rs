//! The embedding refresh's SQL surface: register and activate embedders, the input hash,
//! refresh, sweep, retry. The storage it calls is in store.rs; the worker (worker.rs) calls the
//! same storage.

use super::core::{self as emb, Embedder, Features, SignalInput};
use super::error::EmbeddingError;
use super::jsonb::JsonbBytes;
use super::store::{self, activate_embedder, active, backlog, builtin_active, configured_dims, drain, load, sweep};
use crate::audit;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use std::time::{Duration, Instant};

/// Registers the next version of an embedder (version 1 for a new name). Returns the version.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn register_embedder(
    name: Option<&str>,
    kind: Option<&str>,
    dims: Option<i32>,
    params: default!(Option<JsonB>, "'{}'"),
    activate: default!(Option<bool>, "false"),
) -> Result<i32, ErrorReport> {
    crate::spi::require_primary("register_embedder")?;
    let started = Instant::now();
    let name = name.ok_or(EmbeddingError::Null("name"))?;
    let kind = kind.ok_or(EmbeddingError::Null("kind"))?;
    let dims = dims.ok_or(EmbeddingError::Null("dims"))?;
    let params = params.map(|p| p.0).unwrap_or_else(|| json!({}));
    if !name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(EmbeddingError::Argument {
            what: "name",
            why: format!("\"{name}\" must be 1 to 63 of a-z, 0-9, _ and -, starting with a letter"),
        }
        .into());
    }
    if params.to_string().contains("api_key\"") && params.get("api_key_secret").is_none() {
        return Err(EmbeddingError::Argument { what: "params", why: "an API key never goes into a readable table".into() }.into());
    }
    let parsed = Embedder::parse(name, 1, kind, dims, &params).map_err(|e| EmbeddingError::Invalid(e.to_string()))?;
    // the worker (a superuser process holding the provider's key) only calls hosts a superuser
    // allowed, and sends a key only over https or to this machine
    if let super::core::Kind::Http(h) = &parsed.kind {
        if let Some(secret) = &h.api_key_secret {
            super::egress::check_secret_name(secret).map_err(EmbeddingError::Egress)?;
        }
        let sends_key = h.api_key_secret.is_some() || crate::gucs::embedding_api_key_file().is_some();
        super::egress::check(&h.url, &crate::gucs::embedding_allowed_hosts(), sends_key).map_err(EmbeddingError::Egress)?;
    }
    // a local model: its folder must be there (a name under the superuser's quantops.model_dir;
    // only its config.json is read here, the model itself only ever by the embedder worker)
    if let super::core::Kind::Model(m) = &parsed.kind {
        let hidden = super::model::configured_dims(crate::gucs::model_dir().as_deref(), &m.model).map_err(EmbeddingError::from)?;
        if hidden != dims as usize {
            return Err(EmbeddingError::Invalid(format!("model \"{}\" gives {hidden} dimensions, not {dims}", m.model)).into());
        }
    }
    let configured = configured_dims()?;
    if configured != Some(dims) {
        return Err(EmbeddingError::Dims { dims, configured }.into());
    }
    // an aggregate over the name always yields a row, so the insert always returns its version
    let version: i32 = crate::spi::write_one(
        "insert into quantops.embedders (name, version, kind, dims, params) \
         select $1, coalesce(max(version), 0) + 1, $2, $3, $4 from quantops.embedders where name = $1 \
         returning version",
        &[name.into(), kind.into(), dims.into(), JsonB(params.clone()).into()],
    )
    .map_err(EmbeddingError::from)?
    .unwrap_or(1);
    audit::store::record_call(
        "register_embedder",
        json!({ "name": name, "kind": kind, "dims": dims, "params": params }),
        Some(json!({ "version": version })),
        started,
    );
    if activate.unwrap_or(false) {
        activate_embedder(name, version)?;
    }
    Ok(version)
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.register_embedder(text, text, integer, jsonb, boolean)', 'service_role');",
    name = "grant_register_embedder",
    requires = [register_embedder]
);

/// Makes an embedder version the configured one (the newest when version is null) and enqueues
/// every row that another embedder made.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_embedder(name: Option<&str>, version: default!(Option<i32>, "NULL")) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("set_embedder")?;
    let name = name.ok_or(EmbeddingError::Null("name"))?;
    let version = match version {
        Some(v) => v,
        None => crate::spi::read_one::<i32>("select max(version) from quantops.embedders where name = $1", &[name.into()])
            .map_err(EmbeddingError::from)?
            .ok_or_else(|| EmbeddingError::Unknown(name.to_string()))?,
    };
    let e = load(name, version)?;
    let configured = configured_dims()?;
    if configured != Some(e.dims as i32) {
        return Err(EmbeddingError::Dims { dims: e.dims as i32, configured }.into());
    }
    let n = activate_embedder(name, version)?;
    Ok(JsonB(json!({ "name": name, "version": version, "kind": e.kind_name(), "enqueued": n })))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.set_embedder(text, integer)', 'service_role');",
    name = "grant_set_embedder",
    requires = [set_embedder]
);

/// The input hash of a row under an embedder: what `input_hash` holds once the row is embedded.
#[allow(clippy::too_many_arguments)] // the SQL function's arguments
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn embedding_input_hash(
    name: Option<&str>,
    version: Option<i32>,
    strategy: Option<&str>,
    symbol: Option<&str>,
    features: Option<JsonbBytes>,
    series: Option<Vec<Option<f64>>>,
    rationale: Option<&str>,
    tags: Option<Vec<Option<String>>>,
) -> Result<Option<Vec<u8>>, ErrorReport> {
    // not STRICT (pgrx declares a function STRICT only when no argument is an Option): the
    // embedder must be named; the inputs may be NULL
    let name = name.ok_or(EmbeddingError::Null("name"))?;
    let version = version.ok_or(EmbeddingError::Null("version"))?;
    let e = store::load_shared(name, version)?;
    let row = SignalInput {
        strategy: strategy.unwrap_or_default().to_string(),
        symbol: symbol.unwrap_or_default().to_string(),
        features: features.map(Features::Binary).unwrap_or_default(),
        series: series.map(|s| s.into_iter().flatten().collect()),
        rationale: rationale.map(String::from),
        tags: tags.unwrap_or_default().into_iter().flatten().collect(),
    };
    // NULL: this embedder cannot embed the row (a feature it reads is missing or not a number);
    // the refresh dead-letters such a row with the reason
    Ok(emb::input_hash(&e, &row).ok().map(|h| h.to_vec()))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.embedding_input_hash(text, integer, text, text, jsonb, double precision[], text, text[])', 'service_role');",
    name = "grant_embedding_input_hash",
    requires = [embedding_input_hash]
);

/// Recomputes stale embeddings with the active built-in embedder, within a row limit and a
/// time budget. Returns rows embedded, rows whose inputs had not changed (dequeued, no work),
/// rows dead-lettered, and the exact backlog left.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn refresh_embeddings(
    max_rows: default!(Option<i64>, "100000"),
    time_budget_ms: default!(Option<i64>, "10000"),
    batch_size: default!(Option<i64>, "2000"),
) -> Result<TableIterator<'static, (name!(done, i64), name!(unchanged, i64), name!(failed, i64), name!(remaining, i64))>, ErrorReport> {
    crate::spi::require_primary("refresh_embeddings")?;
    let started = Instant::now();
    let max_rows = max_rows.ok_or(EmbeddingError::Null("max_rows"))?;
    let budget = time_budget_ms.ok_or(EmbeddingError::Null("time_budget_ms"))?;
    let batch = batch_size.ok_or(EmbeddingError::Null("batch_size"))?;
    for (what, v, lo, hi) in
        [("max_rows", max_rows, 1, i64::MAX), ("time_budget_ms", budget, 1, 86_400_000), ("batch_size", batch, 1, 100_000)]
    {
        if v < lo || v > hi {
            return Err(EmbeddingError::Argument { what, why: format!("{v} is not between {lo} and {hi}") }.into());
        }
    }
    let (e, vt) = builtin_active()?;
    let total = drain(&e, &vt, max_rows, Duration::from_millis(budget as u64), batch);
    let remaining = backlog();
    audit::store::record_call(
        "refresh_embeddings",
        json!({ "max_rows": max_rows, "time_budget_ms": budget, "batch_size": batch }),
        Some(json!({ "done": total.done, "unchanged": total.unchanged, "failed": total.failed, "remaining": remaining,
                     "embedder": e.name, "version": e.version })),
        started,
    );
    Ok(TableIterator::once((total.done, total.unchanged, total.failed, remaining)))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.refresh_embeddings(bigint, bigint, bigint)', 'service_role');",
    name = "grant_refresh_embeddings",
    requires = [refresh_embeddings]
);

/// Enqueues every stale row that is not queued: no embedding, another embedder, or an input hash
/// that no longer matches its inputs (a write with triggers off, logical replication). Rows
/// dead-lettered for the same input stay dead-lettered. Returns the rows enqueued.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sweep_embeddings() -> Result<i64, ErrorReport> {
    crate::spi::require_primary("sweep_embeddings")?;
    let started = Instant::now();
    let e = active()?.ok_or(EmbeddingError::NoneActive)?;
    let n = sweep(&e);
    audit::store::record_call("sweep_embeddings", json!({}), Some(json!({ "enqueued": n })), started);
    Ok(n)
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.sweep_embeddings()', 'service_role');",
    name = "grant_sweep_embeddings",
    requires = [sweep_embeddings]
);

/// Puts dead-lettered rows back in the queue (all, or those of one embedder or error class).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn retry_failed(embedder: default!(Option<&str>, "NULL"), error_class: default!(Option<&str>, "NULL")) -> Result<i64, ErrorReport> {
    crate::spi::require_primary("retry_failed")?;
    let started = Instant::now();
    if let Some(c) = error_class {
        if c != "permanent" && c != "retries_exhausted" {
            return Err(EmbeddingError::Argument {
                what: "error_class",
                why: format!("\"{c}\" is not one of permanent, retries_exhausted"),
            }
            .into());
        }
    }
    let n = store::requeue_failed(embedder, error_class);
    audit::store::record_call(
        "retry_failed",
        json!({ "embedder": embedder, "error_class": error_class }),
        Some(json!({ "requeued": n })),
        started,
    );
    Ok(n)
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.retry_failed(text, text)', 'service_role');",
    name = "grant_retry_failed",
    requires = [retry_failed]
);

/// What the worker's HTTP path is doing now (shared memory): requests in flight, the current limit
/// on them (halved after a 429, back up to the embedder's `concurrency` as answers come clean), and
/// the last rate-limit wait a provider asked for (ms). Zeros on a server without the worker (not
/// preloaded, a replica). Reads shared memory only; writes nothing.
#[pg_extern(volatile, parallel_safe, name = "_embedding_http_state")]
#[search_path(pg_catalog, pg_temp)]
fn embedding_http_state(
) -> TableIterator<'static, (name!(requests_in_flight, i32), name!(concurrency, i32), name!(last_rate_limit_wait_ms, Option<i64>))> {
    let (in_flight, limit, wait) = crate::runtime::http_state();
    TableIterator::once((in_flight, limit, wait))
}
pgrx::extension_sql!(
    r#"
insert into quantops.routine_grants (routine, tier) values ('quantops._embedding_http_state()', 'service_role');

-- The backlog at a glance. security_invoker: what the caller may read is what it sees.
create view quantops.embedding_status with (security_invoker = true) as
select
  (select pg_catalog.jsonb_build_object('name', e.name, 'version', e.version, 'kind', e.kind, 'dims', e.dims)
     from quantops.embedders e where e.active) as active_embedder,
  (select count(*) from quantops.embedding_queue) as backlog,
  (select count(*) from quantops.embedding_queue q
     where q.next_try_at <= pg_catalog.now() and (q.lease_until is null or q.lease_until < pg_catalog.now())) as ready,
  (select count(*) from quantops.embedding_queue q where q.lease_until >= pg_catalog.now()) as in_flight,
  (select count(*) from quantops.embedding_queue q where q.next_try_at > pg_catalog.now()) as backing_off,
  (select pg_catalog.round(extract(epoch from pg_catalog.now() - min(q.enqueued_at))::numeric, 1)
     from quantops.embedding_queue q) as oldest_stale_age_s,
  (select coalesce(pg_catalog.jsonb_object_agg(c.k, c.n), '{}'::jsonb) from (
     select coalesce(s.embedder || '@' || s.embedder_version, 'none') k, count(*) n
       from quantops.signal_embeddings s group by 1) c) as coverage,
  (select coalesce(pg_catalog.jsonb_object_agg(f.error_class, f.n), '{}'::jsonb) from (
     select error_class, count(*) n from quantops.embedding_failures group by 1) f) as failures,
  (select coalesce(pg_catalog.jsonb_object_agg(q.last_error_class, q.n), '{}'::jsonb) from (
     select last_error_class, count(*) n from quantops.embedding_queue where last_error_class is not null group by 1) q) as retrying,
  (select pg_catalog.jsonb_build_object(
       'runs', count(*), 'rows', coalesce(sum(r.rows), 0),
       'rows_per_s', pg_catalog.round((coalesce(sum(r.rows), 0) / greatest(sum(extract(epoch from r.finished_at - r.started_at)), 0.001))::numeric, 1),
       'last_run_at', max(r.finished_at))
     from quantops.job_runs r
    where r.job = 'refresh-embeddings' and r.status = 'succeeded' and r.finished_at > pg_catalog.now() - interval '1 hour') as throughput_1h,
  h.requests_in_flight,
  h.concurrency,
  h.last_rate_limit_wait_ms
from quantops._embedding_http_state() h;
comment on view quantops.embedding_status is
  'embedding backlog (exact), its age, coverage per embedder version, failures by class, recent throughput; the worker''s HTTP requests in flight, their current limit and the last rate-limit wait';
"#,
    name = "embedding_status_view",
    requires = [embedding_http_state]
);

/// The local model's vector of a text (a query for match_signals, say), computed by the embedder
/// worker that holds the active model (kind `model`); the text is embedded as is, without the
/// embedder's template. Writes nothing. `quantops.embed_text(text)` returns it as a `vector`.
#[pg_extern(security_definer, stable, parallel_restricted, name = "_embed_text")]
#[search_path(pg_catalog, pg_temp)]
fn embed_text_real(input: &str) -> Result<Vec<f32>, ErrorReport> {
    if input.len() > super::ask::MAX_TEXT {
        return Err(EmbeddingError::Argument {
            what: "input",
            why: format!("{} bytes is longer than embed_text takes ({} bytes)", input.len(), super::ask::MAX_TEXT),
        }
        .into());
    }
    let e = active()?.ok_or(EmbeddingError::NoneActive)?;
    let super::core::Kind::Model(m) = &e.kind else {
        return Err(
            EmbeddingError::ModelUnavailable(format!("the active embedder \"{}\" is not a local model (kind model)", e.name)).into()
        );
    };
    let v = match super::ask::ask(&m.model, input) {
        Ok(v) => v,
        Err(super::ask::AskError::NoWorker) => return Err(EmbeddingError::NoEmbedderWorker.into()),
        Err(super::ask::AskError::Failed(msg)) => return Err(EmbeddingError::ModelUnavailable(msg).into()),
    };
    if v.len() != e.dims {
        return Err(EmbeddingError::ModelUnavailable(format!("the model gives {} dimensions; the embedder has {}", v.len(), e.dims)).into());
    }
    Ok(v)
}
pgrx::extension_sql!(
    r#"
insert into quantops.routine_grants (routine, tier) values ('quantops._embed_text(text)', 'authenticated');
-- the vector form: pgvector's assignment cast from real[] (found by type, not by name)
create function quantops.embed_text(input text) returns vector
language plpgsql stable strict parallel restricted
set search_path = pg_catalog, pg_temp
as $$
begin
  return quantops._embed_text(input);
end
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.embed_text(text)', 'authenticated');
comment on function quantops.embed_text(text) is
  'the active local model''s vector of a text (Supabase RPC; e.g. match_signals(quantops.embed_text(''...''))), computed by the quantops embedder worker';
"#,
    name = "embed_text_vector",
    requires = [embed_text_real]
);

/// Registers a commit-time wake-up of the scheduler worker (called by the enqueue trigger).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _wake_worker() {
    crate::runtime::wake_at_commit();
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run("select quantops.configure(dims => 4)").unwrap();
        Spi::run(
            "select quantops.register_embedder('feat', 'features', 4, \
             '{\"features\": [\"a\", \"b\"], \"mean\": [0, 0], \"std\": [1, 1], \"seed\": 1}', activate => true)",
        )
        .unwrap();
        Spi::run(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, features, rationale) \
             select 'pgtest', 'S' || g, now(), jsonb_build_object('a', g, 'b', -g), 'r' from generate_series(1, 10) g",
        )
        .unwrap();
    }

    fn queued() -> i64 {
        Spi::get_one("select count(*) from quantops.embedding_queue").unwrap().unwrap()
    }

    fn refresh() -> (i64, i64, i64, i64) {
        let r: Option<Vec<Option<i64>>> =
            Spi::get_one("select array[done, unchanged, failed, remaining] from quantops.refresh_embeddings()").unwrap();
        let r: Vec<i64> = r.unwrap().into_iter().map(|x| x.unwrap()).collect();
        (r[0], r[1], r[2], r[3])
    }

    #[pg_test]
    fn jsonb_read_in_place_gives_postgres_own_numbers_and_the_text_paths_hash() {
        use super::super::core::{input_hash, Embedder, Features, SignalInput};
        use super::super::jsonb::{JsonbBytes, Value};
        let e = Embedder::parse(
            "t",
            1,
            "features",
            3,
            &serde_json::json!({"features": ["a", "bb", "longer_key"], "mean": [0, 0, 0], "std": [1, 1, 1]}),
        )
        .unwrap();
        // every magnitude, sign and scale (short and long numeric formats), keys of mixed lengths
        let sql = "with x as (select g, round(((random() * 2 - 1) * 10 ^ (g % 41 - 20))::numeric, g % 25) x \
                                from generate_series(1, 3000) g) \
                   select jsonb_build_object('a', x, 'bb', -x * 0.0000001, 'longer_key', x * 1e20, 'z', 'str', 'n', null, \
                                             'o', jsonb_build_object('a', 1), 'arr', jsonb_build_array(1), 't', true) j, \
                          (jsonb_build_object('a', x, 'bb', -x * 0.0000001, 'longer_key', x * 1e20))::text, \
                          x::float8, (-x * 0.0000001)::float8, (x * 1e20)::float8 from x";
        let n = Spi::connect(|c| {
            let mut n = 0;
            for t in c.select(sql, None, &[]).unwrap() {
                let b: JsonbBytes = t.get(1).unwrap().unwrap();
                let text: String = t.get(2).unwrap().unwrap();
                let o = b.object().unwrap();
                for (k, col) in [("a", 3), ("bb", 4), ("longer_key", 5)] {
                    let want: f64 = t.get(col).unwrap().unwrap();
                    match o.get(k).unwrap() {
                        Some(Value::Number(x)) => assert_eq!(x.to_bits(), want.to_bits(), "{k} in {text}"),
                        other => panic!("{k}: {other:?}"),
                    }
                }
                assert_eq!(o.get("z").unwrap(), Some(Value::String));
                assert_eq!(o.get("n").unwrap(), Some(Value::Null));
                assert_eq!(o.get("o").unwrap(), Some(Value::Object));
                assert_eq!(o.get("arr").unwrap(), Some(Value::Array));
                assert_eq!(o.get("t").unwrap(), Some(Value::Bool));
                assert_eq!(o.get("absent").unwrap(), None);
                let row = |f| SignalInput { features: f, ..Default::default() };
                assert_eq!(input_hash(&e, &row(Features::Binary(b))), input_hash(&e, &row(Features::Text(text))));
                n += 1;
            }
            n
        });
        assert_eq!(n, 3000);
        let scalar: JsonbBytes = Spi::get_one("select '5'::jsonb").unwrap().unwrap();
        assert_eq!(scalar.object().err().as_deref(), Some("a scalar"));
        let array: JsonbBytes = Spi::get_one("select '[1, 2]'::jsonb").unwrap().unwrap();
        assert_eq!(array.object().err().as_deref(), Some("an array"));
    }

    #[pg_test]
    fn vector_arrays_built_in_rust_are_what_postgres_builds() {
        let vt = crate::embedding::store::vector_type();
        let vecs = vec![vec![1.0f32, 2.0, 3.0], vec![4.5, -1.0, 0.0], vec![f32::MIN_POSITIVE]];
        let sql = format!(
            "select $1 = array['[1,2,3]', '[4.5,-1,0]', '[{:e}]']::{s}.vector[] and pg_catalog.array_length($1, 1) = 3 \
               and ($1)[2] = '[4.5,-1,0]'::{s}.vector",
            f32::MIN_POSITIVE,
            s = vt.schema
        );
        let same: Option<bool> =
            Spi::get_one_with_args(&sql, &[crate::embedding::store::vector_array_datum(&vt, &vt.array_bytes(&vecs))]).unwrap();
        assert_eq!(same, Some(true));
        let empty: Option<bool> = Spi::get_one_with_args(
            &format!("select pg_catalog.cardinality($1) = 0 and $1 = '{{}}'::{}.vector[]", vt.schema),
            &[crate::embedding::store::vector_array_datum(&vt, &vt.array_bytes(&[]))],
        )
        .unwrap();
        assert_eq!(empty, Some(true));
    }

    #[pg_test]
    fn a_pipelined_refresh_in_small_batches_embeds_every_row_once() {
        setup();
        Spi::run(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, features) \
                  select 'pgtest', 'P' || g, now(), jsonb_build_object('a', g, 'b', 1) from generate_series(1, 25) g",
        )
        .unwrap();
        let r: Option<Vec<Option<i64>>> =
            Spi::get_one("select array[done, unchanged, failed, remaining] from quantops.refresh_embeddings(batch_size => 3)").unwrap();
        assert_eq!(r.unwrap(), vec![Some(35), Some(0), Some(0), Some(0)]);
        let wrong: Option<i64> = Spi::get_one(
            "select count(*) from quantops.signal_embeddings \
             where embedding is null or input_hash is distinct from quantops.embedding_input_hash('feat', 1, strategy, symbol, features, series, rationale, tags)",
        )
        .unwrap();
        assert_eq!(wrong, Some(0));
        // max_rows is honoured exactly, across batches
        Spi::run("update quantops.signal_embeddings set features = features || '{\"b\": 2}'").unwrap();
        let r: Option<Vec<Option<i64>>> =
            Spi::get_one("select array[done, remaining] from quantops.refresh_embeddings(max_rows => 7, batch_size => 3)").unwrap();
        assert_eq!(r.unwrap(), vec![Some(7), Some(28)]);
    }

    #[pg_test]
    fn new_rows_are_stale_and_refresh_embeds_them() {
        setup();
        assert_eq!(queued(), 10);
        let (done, unchanged, _, _) = refresh();
        assert_eq!((done, unchanged), (10, 0));
        assert_eq!(queued(), 0);
        let ok: Option<bool> = Spi::get_one(
            "select bool_and(embedding is not null and embedder = 'feat' and embedder_version = '1' \
             and input_hash = quantops.embedding_input_hash('feat', 1, strategy, symbol, features, series, rationale, tags)) \
             from quantops.signal_embeddings where strategy = 'pgtest'",
        )
        .unwrap();
        assert_eq!(ok, Some(true));
    }

    #[pg_test]
    fn unrelated_updates_cause_no_work() {
        setup();
        refresh();
        // the features embedder does not read rationale, tags or symbol... nor other features
        Spi::run("update quantops.signal_embeddings set rationale = 'changed', tags = '{x}' where strategy = 'pgtest'").unwrap();
        assert_eq!(queued(), 0);
        Spi::run("update quantops.signal_embeddings set features = features || '{\"unused\": 1}' where strategy = 'pgtest'").unwrap();
        // enqueued (features changed) but no embedding work: the input hash is the same
        assert_eq!(queued(), 10);
        let (done, unchanged, _, remaining) = refresh();
        assert_eq!((done, unchanged, remaining), (0, 10, 0));
        let hist: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embedding_history").unwrap();
        assert_eq!(hist, Some(0));
    }

    #[pg_test]
    fn many_updates_coalesce_into_one_unit_of_work() {
        setup();
        refresh();
        for i in 0..5 {
            Spi::run(&format!(
                "update quantops.signal_embeddings set features = jsonb_build_object('a', {i} + 100, 'b', 1) where symbol = 'S1'"
            ))
            .unwrap();
        }
        assert_eq!(queued(), 1);
        let (done, ..) = refresh();
        assert_eq!(done, 1);
        // the replaced embedding is kept for as-of reads
        let hist: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embedding_history").unwrap();
        assert_eq!(hist, Some(1));
    }

    #[pg_test]
    fn sweep_catches_writes_that_bypassed_the_trigger() {
        setup();
        refresh();
        Spi::run("set local session_replication_role = replica").unwrap();
        Spi::run("update quantops.signal_embeddings set features = jsonb_build_object('a', 7, 'b', 9) where symbol = 'S2'").unwrap();
        Spi::run("set local session_replication_role = origin").unwrap();
        assert_eq!(queued(), 0);
        let n: Option<i64> = Spi::get_one("select quantops.sweep_embeddings()").unwrap();
        assert_eq!(n, Some(1));
        let (done, ..) = refresh();
        assert_eq!(done, 1);
        assert_eq!(Spi::get_one::<i64>("select quantops.sweep_embeddings()").unwrap(), Some(0));
    }

    #[pg_test]
    fn bad_rows_are_dead_lettered_and_retry_failed_puts_them_back() {
        setup();
        Spi::run("update quantops.signal_embeddings set features = '{\"a\": 1}' where symbol = 'S3'").unwrap();
        let (done, _, failed, remaining) = refresh();
        assert_eq!((done, failed, remaining), (9, 1, 0));
        let err: Option<String> = Spi::get_one("select error from quantops.embedding_failures").unwrap();
        assert_eq!(err.as_deref(), Some("feature \"b\" is missing"));
        assert_eq!(Spi::get_one::<i64>("select quantops.retry_failed()").unwrap(), Some(1));
        assert_eq!(queued(), 1);
        // fixing the input clears the dead letter and embeds it
        Spi::run("update quantops.signal_embeddings set features = '{\"a\": 1, \"b\": 2}' where symbol = 'S3'").unwrap();
        let (done, _, failed, _) = refresh();
        assert_eq!((done, failed), (1, 0));
        assert_eq!(Spi::get_one::<i64>("select count(*) from quantops.embedding_failures").unwrap(), Some(0));
    }

    #[pg_test]
    fn a_new_embedder_version_marks_rows_stale_and_keeps_old_vectors() {
        setup();
        refresh();
        let r: Option<pgrx::JsonB> = Spi::get_one(
            "select quantops.set_embedder('feat', quantops.register_embedder('feat', 'features', 4, \
             '{\"features\": [\"a\", \"b\"], \"mean\": [1, 1], \"std\": [2, 2], \"seed\": 1}'))",
        )
        .unwrap();
        assert_eq!(r.unwrap().0["enqueued"], 10);
        // old vectors stay searchable until replaced
        let n: Option<i64> =
            Spi::get_one("select count(*) from quantops.signal_embeddings where embedding is not null and embedder_version = '1'").unwrap();
        assert_eq!(n, Some(10));
        let (done, ..) = refresh();
        assert_eq!(done, 10);
        let v2: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embeddings where embedder_version = '2'").unwrap();
        assert_eq!(v2, Some(10));
        // the version-1 vectors are kept (as-of reads across transactions: tests/embedding.rs)
        let kept: Option<i64> =
            Spi::get_one("select count(*) from quantops.signal_embedding_history where embedder_version = '1'").unwrap();
        assert_eq!(kept, Some(10));
    }

    #[pg_test(error = "embedder \"feat\" version 1 cannot change")]
    fn embedder_versions_are_immutable() {
        setup();
        Spi::run("update quantops.embedders set params = '{}' where name = 'feat'").unwrap();
    }

    #[pg_test(error = "invalid embedder: feature \"a\" is named twice")]
    fn malformed_params_are_refused() {
        Spi::run("select quantops.configure(dims => 4)").unwrap();
        Spi::run(
            "select quantops.register_embedder('x', 'features', 4, '{\"features\": [\"a\", \"a\"], \"mean\": [0, 0], \"std\": [1, 1]}')",
        )
        .unwrap();
    }
}
