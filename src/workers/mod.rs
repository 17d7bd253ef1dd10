//! The scheduler background worker, registered only when quantops is loaded through
//! shared_preload_libraries. It runs the jobs of the registry (src/schedule.rs); it is the top of
//! the crate: nothing imports it.
pub mod scheduler;

pub fn register() {
    crate::runtime::init_preloaded();
    scheduler::register();
}
