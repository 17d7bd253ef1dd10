//! The embedder worker: the one process that holds the local sentence model (embedder kind
//! `model`). It loads the model lazily, on the first row or `embed_text` that needs it; drains
//! the queue when the active embedder is a local model (the same lease / embed off-thread /
//! compare-and-set write path as the HTTP provider's, in short transactions); and answers
//! `embed_text` through shared memory, also between the steps of a drain. Like the scheduler it
//! starts after recovery (never on a standby) and the postmaster restarts it after a crash.

use crate::embedding::{ask, local, worker as drain};
use crate::gucs;
use crate::runtime::{reload_if_asked, stopping};
use crate::xact::in_transaction;
use pgrx::bgworkers::*;
use pgrx::prelude::*;

pub const NAME: &str = "quantops embedder";

pub fn register() {
    super::register_worker(NAME, "quantops_embedder_main");
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn quantops_embedder_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    local::claim();
    let db = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    super::harden_session();
    log!("{NAME} started in database \"{db}\"");
    // SAFETY: MyProcPid is set once at process start and only read
    ask::set_worker_pid(unsafe { pg_sys::MyProcPid });
    let mut marked_interrupted = false;
    let mut first = true;
    // embed_text's askers and committed rows set the latch; the naptime is the longest wait
    while first || (!stopping() && BackgroundWorker::wait_latch(Some(gucs::naptime())) && !stopping()) {
        first = false;
        reload_if_asked();
        ask::serve();
        if !gucs::enabled() {
            continue;
        }
        match in_transaction(super::extension_installed) {
            Ok(true) => {}
            _ => continue,
        }
        if !marked_interrupted {
            marked_interrupted = in_transaction(|| super::mark_interrupted("embedder worker")).is_ok();
        }
        // the local model's rows; embed_text is answered between its steps too
        while drain::drain(true) > 0 && !stopping() {
            ask::serve();
        }
    }
    ask::set_worker_pid(0);
    log!("{NAME} stopped");
}
