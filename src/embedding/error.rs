//! The embedding refresh's errors and their SQLSTATEs.

use crate::error::SqlError;
use crate::sql_error;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("{0} must not be null")]
    Null(&'static str),
    #[error("invalid embedder: {0}")]
    Invalid(String),
    #[error("embedder \"{0}\" does not exist")]
    Unknown(String),
    #[error("embedder \"{name}\" version {version} does not exist")]
    UnknownVersion { name: String, version: i32 },
    #[error("no embedder is active")]
    NoneActive,
    #[error("embedder \"{name}\" is a{} {kind} embedder", if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" })]
    WorkerOnly { name: String, kind: &'static str },
    #[error("the local model is not available: {0}")]
    ModelUnavailable(String),
    #[error("the local model cannot be used: {0}")]
    ModelUnsupported(String),
    #[error("embed_text needs the quantops embedder worker, which is not running")]
    NoEmbedderWorker,
    #[error("embedder dims {dims} do not match the configured dims ({})", configured.map(|c| c.to_string()).unwrap_or_else(|| "none".into()))]
    Dims { dims: i32, configured: Option<i32> },
    #[error("invalid {what}: {why}")]
    Argument { what: &'static str, why: String },
    #[error("{0}")]
    Egress(crate::embedding::egress::EgressError),
    #[error("{0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl SqlError for EmbeddingError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            EmbeddingError::Null(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            EmbeddingError::Invalid(_) | EmbeddingError::Argument { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            EmbeddingError::Unknown(_) | EmbeddingError::UnknownVersion { .. } => ERRCODE_UNDEFINED_OBJECT,
            EmbeddingError::ModelUnsupported(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            EmbeddingError::NoneActive
            | EmbeddingError::WorkerOnly { .. }
            | EmbeddingError::Dims { .. }
            | EmbeddingError::ModelUnavailable(_)
            | EmbeddingError::NoEmbedderWorker => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            EmbeddingError::Egress(crate::embedding::egress::EgressError::NotAllowed { .. }) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            EmbeddingError::Egress(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            // SPI itself failed (a PostgreSQL ERROR keeps its own SQLSTATE): a bug in quantops
            EmbeddingError::Spi(_) => ERRCODE_INTERNAL_ERROR,
        }
    }
    fn detail(&self) -> Option<String> {
        match self {
            EmbeddingError::WorkerOnly { kind: "http", .. } => {
                Some("an http provider is called only from the scheduler worker, never inside an open transaction".into())
            }
            EmbeddingError::WorkerOnly { .. } => Some("the local model lives in the quantops embedder worker only".into()),
            _ => None,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            EmbeddingError::NoneActive => Some("register one with quantops.register_embedder(..., activate => true)".into()),
            EmbeddingError::WorkerOnly { .. } => {
                Some("put quantops in shared_preload_libraries; the worker drains the queue (see quantops.embedding_status)".into())
            }
            EmbeddingError::NoEmbedderWorker => Some(
                "put quantops in shared_preload_libraries and call it on the primary (the worker does not run on a standby); see quantops.workers".into(),
            ),
            EmbeddingError::ModelUnavailable(_) => {
                Some("a superuser sets quantops.model_dir to the folder of the models (scripts/bootstrap.sh installs all-MiniLM-L6-v2)".into())
            }
            EmbeddingError::Dims { .. } => {
                Some("run quantops.configure(dims => ...) first, or register the embedder with the configured dims".into())
            }
            EmbeddingError::Egress(crate::embedding::egress::EgressError::NotAllowed { .. }) => {
                Some("a superuser adds the host to quantops.embedding_allowed_hosts (ALTER SYSTEM, then pg_reload_conf())".into())
            }
            EmbeddingError::Egress(crate::embedding::egress::EgressError::KeyInClear { .. }) => Some("use an https:// url".into()),
            EmbeddingError::Unknown(_) | EmbeddingError::UnknownVersion { .. } => {
                Some("see select name, version, kind, active from quantops.embedders".into())
            }
            _ => None,
        }
    }
}
sql_error!(EmbeddingError);

impl From<crate::embedding::model::ModelError> for EmbeddingError {
    fn from(e: crate::embedding::model::ModelError) -> Self {
        match e {
            crate::embedding::model::ModelError::Unavailable(m) => EmbeddingError::ModelUnavailable(m),
            crate::embedding::model::ModelError::Unsupported(m) => EmbeddingError::ModelUnsupported(m),
        }
    }
}
