//! The embedding dimension and the IVFFlat index: `quantops.configure(dims => ...)`.
pub mod core;
pub mod sql;
