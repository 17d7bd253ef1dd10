//! IVFFlat index health and maintenance: centers read from the index's own pages, balance,
//! drift and recall, and rebuilds that never block writes (run by the worker as top-level
//! statements).
pub mod core;
pub mod sql;
pub mod worker;
