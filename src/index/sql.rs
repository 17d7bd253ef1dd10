//! The index capability's SQL surface. `configure(dims, lists, metric)` fixes the embedding
//! column's dimension and builds the IVFFlat index: run it once after CREATE EXTENSION (a
//! migration), and again to change the index's lists or metric; it takes an ACCESS EXCLUSIVE lock
//! while it works, so on a populated table prefer `maintain_index()`, which rebuilds without
//! blocking writes. `index_health(...)` and `maintain_index(...)` (SQL faces taking a regclass,
//! below, over `_index_health` and `_maintain_index`) measure an index and queue
//! its rebuild; `_index_state()` is what every prune run records.

use super::config as rules;
use super::error::{ConfigError, IvfError};
use super::store::{measure, plan, resolve, state, Options, DEFAULT_INDEX};
use crate::audit;
use crate::spi::{run, statement, vector_schema, Sql};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

pub const INDEX_NAME: &str = "signal_embeddings_embedding_ivfflat_idx";

/// Sets the embedding dimension and (re)builds the IVFFlat index. Returns the settings.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn configure(
    dims: Option<i32>,
    lists: default!(Option<i32>, "NULL"),
    metric: default!(Option<&str>, "'cosine'"),
) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("configure")?;
    let started = std::time::Instant::now();
    let dims = dims.ok_or(ConfigError::Null("dims"))?;
    let metric = metric.ok_or(ConfigError::Null("metric"))?;
    let (dims, lists, metric) = rules::validate(dims, lists, metric).map_err(ConfigError::from)?;
    let vschema = vector_schema().ok_or(ConfigError::NoVector)?;

    // Vectors already stored must have the new dimension: never truncate or pad silently.
    let (other, other_dims): (Option<i64>, Option<i32>) = crate::spi::read_two(
        "select count(*), min(d) from (\
           select pg_catalog.array_length(embedding::real[], 1) d from quantops.signal_embeddings where embedding is not null \
           union all \
           select pg_catalog.array_length(embedding::real[], 1) from quantops.signal_embeddings_archive where embedding is not null) v \
         where d <> $1",
        &[dims.into()],
    )
    .map_err(ConfigError::from)?;
    if let (Some(n), Some(d)) = (other, other_dims) {
        if n > 0 {
            return Err(ConfigError::Populated { count: n, dims: d, want: dims }.into());
        }
    }

    let rows: i64 = crate::spi::read_one("select count(*) from quantops.signal_embeddings", &[]).map_err(ConfigError::from)?.unwrap_or(0);
    let lists = lists.unwrap_or_else(|| rules::recommended_lists(rows));
    // dims and lists are validated integers; the schema and index names are quoted identifiers
    let (vtype, dims_sql) = (Sql::in_schema(&vschema, "vector"), Sql::int(dims.into()));
    let idx = Sql::qualified("quantops", INDEX_NAME);
    let exists: bool = crate::spi::read_one::<bool>("select pg_catalog.to_regclass($1) is not null", &[idx.as_str().into()])
        .map_err(ConfigError::from)?
        .unwrap_or(false);
    if exists {
        run("dropping the index", &statement("drop index {}", &[&idx]), &[]);
    }
    for t in ["signal_embeddings", "signal_embeddings_archive"] {
        run(
            "setting the embedding dimension",
            &statement(
                "alter table {} alter column embedding type {}({}) using embedding::{}({})",
                &[&Sql::qualified("quantops", t), &vtype, &dims_sql, &vtype, &dims_sql],
            ),
            &[],
        );
    }
    run(
        "building the IVFFlat index",
        &statement(
            "create index {} on quantops.signal_embeddings using ivfflat (embedding {}) with (lists = {})",
            &[&Sql::ident(INDEX_NAME), &Sql::in_schema(&vschema, metric.opclass()), &Sql::int(lists.into())],
        ),
        &[],
    );
    super::store::record_build("create", "quantops.configure")?;
    run(
        "recording the settings",
        "update quantops.settings set embedding_dims = $1, index_lists = $2, index_metric = $3, search_probes = null, \
         configured_at = pg_catalog.now(), configured_by = quantops._caller_role()",
        &[dims.into(), lists.into(), metric.name().into()],
    );
    let settings = json!({ "dims": dims, "lists": lists, "metric": metric.name(),
                           "probes": rules::recommended_probes(lists), "rows": rows, "index": INDEX_NAME });
    audit::store::record_call(
        "configure",
        json!({ "dims": dims, "lists": lists, "metric": metric.name() }),
        Some(settings.clone()),
        started,
    );
    Ok(JsonB(settings))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.configure(integer, integer, text)', 'postgres');",
    name = "grant_configure",
    requires = [configure]
);

/// The index's state without sampling (quantops' own index): what every prune run records before
/// and after. Null when there is no index yet.
#[pg_extern(security_definer, name = "_index_state")]
#[search_path(pg_catalog, pg_temp)]
fn index_state() -> Result<Option<JsonB>, ErrorReport> {
    match resolve(None) {
        Ok(t) => Ok(Some(JsonB(state(&t)?))),
        Err(IvfError::NotConfigured) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The health of an IVFFlat index (quantops' own by default): rows and churn since the build,
/// lists against pgvector's guidance, balance and drift from the index's own centers, and on
/// demand recall@k against exact search with the smallest probes that reach the target. Recorded
/// in quantops.index_health_log. SQL: quantops.index_health(target regclass, ...), below.
#[pg_extern(security_definer, name = "_index_health")]
#[search_path(pg_catalog, pg_temp)]
fn index_health(
    target: default!(Option<pg_sys::Oid>, "NULL"),
    recall: default!(Option<bool>, "false"),
    k: default!(Option<i32>, "10"),
    queries: default!(Option<i32>, "50"),
    target_recall: default!(Option<f64>, "NULL"),
    sample_rows: default!(Option<i32>, "NULL"),
) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("index_health")?;
    if let Some(s) = sample_rows {
        if !(100..=1_000_000).contains(&s) {
            return Err(IvfError::Param("sample_rows", format!("{s} (between 100 and 1000000)")).into());
        }
    }
    let t = resolve(target)?;
    let o = Options {
        recall: recall.unwrap_or(false),
        k: k.unwrap_or(10),
        queries: queries.unwrap_or(50),
        target_recall,
        sample_rows,
        record: true,
    };
    Ok(JsonB(measure(&t, &o)?))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops._index_health(oid, boolean, integer, integer, double precision, integer)', 'service_role');",
    name = "grant_index_health",
    requires = [index_health]
);

/// Measures the index and, when it needs it (or `force`), queues a rebuild that the worker runs
/// without blocking writes. `dry_run` says what would happen. SQL: quantops.maintain_index(target
/// regclass, ...), below.
#[pg_extern(security_definer, name = "_maintain_index")]
#[search_path(pg_catalog, pg_temp)]
fn maintain_index(
    target: default!(Option<pg_sys::Oid>, "NULL"),
    force: default!(Option<bool>, "false"),
    dry_run: default!(Option<bool>, "false"),
) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("maintain_index")?;
    let t = resolve(target)?;
    // quantops' own index is quantops' to maintain (the maintain-index job does the same); any
    // other index is rebuilt by the superuser worker only for the owner of its table
    if t.key() != DEFAULT_INDEX {
        // a scalar subquery: one row even if the table was dropped meanwhile (NULL: not the owner)
        let owner = crate::spi::read_one::<bool>(
            "select pg_catalog.pg_has_role($1, (select c.relowner from pg_catalog.pg_class c where c.oid = $2), 'USAGE')",
            &[crate::spi::outer_user().into(), t.table_oid.into()],
        )
        .map_err(IvfError::from)?
        .unwrap_or(false);
        if !owner {
            return Err(IvfError::NotOwner(t.table_sql.to_string()).into());
        }
    }
    let by: String = crate::spi::read_one("select 'sql:' || quantops._caller_role()", &[]).map_err(IvfError::from)?.unwrap_or_default();
    Ok(JsonB(plan(&t, force.unwrap_or(false), dry_run.unwrap_or(false), &by)?))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops._maintain_index(oid, boolean, boolean)', 'service_role');",
    name = "grant_maintain_index",
    requires = [maintain_index]
);

pgrx::extension_sql!(
    r#"
-- The SQL faces of the index functions take a regclass: an index, or a table with one.
create function quantops.index_health(target regclass default null, recall boolean default false,
                                      k integer default 10, queries integer default 50,
                                      target_recall double precision default null,
                                      sample_rows integer default null)
returns jsonb
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$ select quantops._index_health(target::oid, recall, k, queries, target_recall, sample_rows) $$;
comment on function quantops.index_health(regclass, boolean, integer, integer, double precision, integer) is
  'health of an IVFFlat index (quantops'' own by default): churn, lists, balance and drift from its own centers, recall@k on demand; recorded in quantops.index_health_log';
insert into quantops.routine_grants (routine, tier) values ('quantops.index_health(regclass, boolean, integer, integer, double precision, integer)', 'service_role');

create function quantops.maintain_index(target regclass default null, force boolean default false,
                                        dry_run boolean default false)
returns jsonb
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$ select quantops._maintain_index(target::oid, force, dry_run) $$;
comment on function quantops.maintain_index(regclass, boolean, boolean) is
  'measure the IVFFlat index and queue a rebuild when it needs one; the worker runs it with REINDEX/CREATE INDEX CONCURRENTLY, never blocking writes';
insert into quantops.routine_grants (routine, tier) values ('quantops.maintain_index(regclass, boolean, boolean)', 'service_role');
"#,
    name = "index_regclass_faces",
    requires = [index_health, maintain_index]
);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn configure_sets_dims_and_builds_the_index() {
        let lists: Option<i32> = Spi::get_one("select (quantops.configure(dims => 4, lists => 3, metric => 'l2')->>'lists')::int").unwrap();
        assert_eq!(lists, Some(3));
        let typ: Option<String> = Spi::get_one(
            "select format_type(atttypid, atttypmod) from pg_attribute \
             where attrelid = 'quantops.signal_embeddings'::regclass and attname = 'embedding'",
        )
        .unwrap();
        assert!(typ.unwrap().ends_with("vector(4)"));
        let am: Option<String> = Spi::get_one(
            "select a.amname || ' ' || o.opcname || ' ' || array_to_string(c.reloptions, ',') \
             from pg_index i join pg_class c on c.oid = i.indexrelid join pg_am a on a.oid = c.relam \
             join pg_opclass o on o.oid = i.indclass[0] \
             where i.indexrelid = 'quantops.signal_embeddings_embedding_ivfflat_idx'::regclass",
        )
        .unwrap();
        assert_eq!(am.as_deref(), Some("ivfflat vector_l2_ops lists=3"));
    }

    #[pg_test(error = "invalid dims: 0")]
    fn configure_rejects_zero_dims() {
        Spi::run("select quantops.configure(dims => 0)").unwrap();
    }

    #[pg_test(error = "quantops.signal_embeddings holds 1 embeddings of 3 dimensions, not 4")]
    fn configure_never_truncates_stored_vectors() {
        Spi::run(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) \
             values ('s', 'AAPL', now(), '[1,2,3]', 'test')",
        )
        .unwrap();
        Spi::run("select quantops.configure(dims => 4)").unwrap();
    }
}
