//! The index capability's errors and their SQLSTATEs.

use super::config::{self as rules, ConfigProblem};
use crate::error::SqlError;
use crate::sql_error;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum IvfError {
    #[error("quantops has no IVFFlat index yet")]
    NotConfigured,
    #[error("relation with OID {0} does not exist")]
    NoRelation(u32),
    #[error("table \"{0}\" has no IVFFlat index")]
    NoIvfflat(String),
    #[error("\"{0}\" is not an IVFFlat index")]
    NotIvfflat(String),
    #[error("index \"{0}\" is not valid")]
    Invalid(String),
    #[error("index \"{0}\" is not supported: {1}")]
    Unsupported(String, String),
    #[error("permission denied for table \"{0}\"")]
    Denied(String),
    #[error("must be owner of table \"{0}\" to rebuild its index")]
    NotOwner(String),
    #[error("{0}")]
    Spi(#[from] pgrx::spi::SpiError),
    #[error("invalid {0}: {1}")]
    Param(&'static str, String),
    #[error("could not read index \"{0}\": {1}")]
    Pages(String, String),
}

impl SqlError for IvfError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            IvfError::NotConfigured | IvfError::Invalid(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            IvfError::NoRelation(_) => ERRCODE_UNDEFINED_TABLE,
            IvfError::NoIvfflat(_) => ERRCODE_UNDEFINED_OBJECT,
            IvfError::NotIvfflat(_) => ERRCODE_WRONG_OBJECT_TYPE,
            IvfError::Unsupported(..) => ERRCODE_FEATURE_NOT_SUPPORTED,
            IvfError::Denied(_) | IvfError::NotOwner(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            // SPI itself failed (not a PostgreSQL ERROR, which keeps its own SQLSTATE): a bug
            IvfError::Spi(_) => ERRCODE_INTERNAL_ERROR,
            IvfError::Param(..) => ERRCODE_INVALID_PARAMETER_VALUE,
            IvfError::Pages(..) => ERRCODE_DATA_CORRUPTED,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            IvfError::NotConfigured => Some("run quantops.configure(dims => ...) to build it".into()),
            IvfError::NoIvfflat(_) => {
                Some("create one: create index on <table> using ivfflat (<column> vector_cosine_ops) with (lists = ...)".into())
            }
            IvfError::Invalid(_) => Some("a failed concurrent build leaves an invalid index; quantops.maintain_index() drops it".into()),
            IvfError::NotOwner(_) => Some(
                "the quantops worker rebuilds an index as a superuser, so it does so only for the table's owner, as REINDEX requires"
                    .into(),
            ),
            _ => None,
        }
    }
}
sql_error!(IvfError);

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
