//! `quantops.configure(dims, lists, metric)`: fixes the embedding column's dimension and builds
//! the IVFFlat index. Run it once after CREATE EXTENSION (a migration), and again to change the
//! index's lists or metric. It takes an ACCESS EXCLUSIVE lock while it works; on a populated table
//! prefer quantops.maintain_index(), which rebuilds without blocking writes.

use super::core::{self as rules, ConfigProblem};
use crate::audit;
use crate::error::SqlError;
use crate::spi::{quote_ident, run, vector_schema};
use crate::sql_error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

pub const INDEX_NAME: &str = "signal_embeddings_embedding_ivfflat_idx";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must not be null")]
    Null(&'static str),
    #[error("invalid dims: {0}")]
    Dims(i32),
    #[error("invalid lists: {0}")]
    Lists(i32),
    #[error("unknown metric \"{0}\"")]
    Metric(String),
    #[error("quantops.signal_embeddings holds {count} embeddings of {dims} dimensions, not {want}")]
    Populated { count: i64, dims: i32, want: i32 },
    #[error("extension \"vector\" is not installed")]
    NoVector,
    #[error("{0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl SqlError for ConfigError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            ConfigError::Null(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            ConfigError::Dims(_) | ConfigError::Lists(_) | ConfigError::Metric(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            ConfigError::Populated { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ConfigError::NoVector => ERRCODE_UNDEFINED_OBJECT,
            // SPI itself failed (a PostgreSQL ERROR keeps its own SQLSTATE): a bug in quantops
            ConfigError::Spi(_) => ERRCODE_INTERNAL_ERROR,
        }
    }
    fn detail(&self) -> Option<String> {
        match self {
            ConfigError::Dims(_) => Some(format!("dims must be between 1 and {} (pgvector's IVFFlat limit)", rules::MAX_DIMS)),
            ConfigError::Lists(_) => Some(format!("lists must be between 1 and {}", rules::MAX_LISTS)),
            ConfigError::Metric(_) => Some("metric must be one of cosine, l2, ip".into()),
            _ => None,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Populated { .. } => Some(
                "clear the embeddings (update quantops.signal_embeddings set embedding = null, embedder = null) and re-embed, or keep the current dims".into(),
            ),
            ConfigError::Lists(_) => Some("leave lists null to use pgvector's guidance: rows / 1000, sqrt(rows) past a million".into()),
            _ => None,
        }
    }
}
sql_error!(ConfigError);

impl From<ConfigProblem> for ConfigError {
    fn from(p: ConfigProblem) -> Self {
        match p {
            ConfigProblem::Dims(d) => ConfigError::Dims(d),
            ConfigProblem::Lists(l) => ConfigError::Lists(l),
            ConfigProblem::Metric(m) => ConfigError::Metric(m),
        }
    }
}

/// Sets the embedding dimension and (re)builds the IVFFlat index. Returns the settings.
#[pg_extern]
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
    let vtype = format!("{vschema}.vector({dims})");
    let idx = quote_ident(INDEX_NAME);
    // dims, lists are validated integers; the schema and index names are quoted identifiers
    let exists: bool = crate::spi::read_one::<bool>("select pg_catalog.to_regclass($1) is not null", &[format!("quantops.{idx}").into()])
        .map_err(ConfigError::from)?
        .unwrap_or(false);
    if exists {
        run("dropping the index", &format!("drop index quantops.{idx}"), &[]);
    }
    for t in ["signal_embeddings", "signal_embeddings_archive"] {
        let t = quote_ident(t);
        run(
            "setting the embedding dimension",
            &format!("alter table quantops.{t} alter column embedding type {vtype} using embedding::{vtype}"),
            &[],
        );
    }
    run(
        "building the IVFFlat index",
        &format!(
            "create index {idx} on quantops.signal_embeddings using ivfflat (embedding {vschema}.{}) with (lists = {lists})",
            metric.opclass()
        ),
        &[],
    );
    crate::ivf::sql::record_build("create", "quantops.configure")?;
    run(
        "recording the settings",
        "update quantops.settings set embedding_dims = $1, index_lists = $2, index_metric = $3, search_probes = null, \
         configured_at = pg_catalog.now(), configured_by = quantops._caller_role()",
        &[dims.into(), lists.into(), metric.name().into()],
    );
    let settings = json!({ "dims": dims, "lists": lists, "metric": metric.name(),
                           "probes": rules::recommended_probes(lists), "rows": rows, "index": INDEX_NAME });
    audit::sql::record_call(
        "configure",
        json!({ "dims": dims, "lists": lists, "metric": metric.name() }),
        Some(settings.clone()),
        started,
    );
    Ok(JsonB(settings))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn configure_sets_dims_and_builds_the_index() {
        let lists: Option<i32> =
            Spi::get_one("select (quantops.configure(dims => 4, lists => 3, metric => 'l2')->>'lists')::int").unwrap();
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
