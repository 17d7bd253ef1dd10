//! Background workers. Registered only when quantops is loaded through shared_preload_libraries.
pub mod scheduler;

use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// True in every process of a server that loaded quantops through shared_preload_libraries
/// (the postmaster sets it in _PG_init and its children inherit it).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

pub fn register() {
    PRELOADED.store(true, Ordering::Relaxed);
    scheduler::register();
}
