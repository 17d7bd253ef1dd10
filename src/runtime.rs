//! What every process of quantops may ask about the scheduler worker, whatever layer it is in:
//! whether the server preloaded quantops, how to wake the worker (its latch, now or at commit),
//! and whether a stop or reload was asked. It imports nothing of quantops, so the SQL surface
//! wakes the worker without depending on it.
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// The scheduler's pid, in shared memory, so any backend can set its latch.
// SAFETY: the name is unique to quantops and the atomic is only reached through pg_shmem_init!
static SCHEDULER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"quantops_scheduler_pid") };
/// The embedder worker's pid (it holds the local model), so new rows wake it too.
// SAFETY: as above
static EMBEDDER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"quantops_embedder_pid") };

/// What the worker's HTTP path is doing now, for quantops.embedding_status: requests in flight,
/// the current limit on them, and the last rate-limit wait plus one (ms; 0: none yet). Written
/// only by the worker.
// SAFETY: names unique to quantops; reached only through pg_shmem_init! and the functions below
static HTTP_IN_FLIGHT: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"quantops_http_in_flight") };
// SAFETY: as above
static HTTP_LIMIT: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"quantops_http_limit") };
// SAFETY: as above
static HTTP_LAST_WAIT: PgAtomic<AtomicI64> = unsafe { PgAtomic::new(c"quantops_http_last_wait") };

/// True in every process of a server that loaded quantops through shared_preload_libraries
/// (the postmaster sets it in _PG_init and its children inherit it).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Marks this server as preloaded and claims the scheduler's slot in shared memory: only from
/// `_PG_init` while shared_preload_libraries is processed.
#[allow(unexpected_cfgs)]
pub fn init_preloaded() {
    PRELOADED.store(true, Ordering::Relaxed);
    pg_shmem_init!(SCHEDULER_PID);
    pg_shmem_init!(EMBEDDER_PID);
    pg_shmem_init!(HTTP_IN_FLIGHT);
    pg_shmem_init!(HTTP_LIMIT);
    pg_shmem_init!(HTTP_LAST_WAIT);
}

/// The worker publishes its HTTP path's state (requests in flight, their limit, the last
/// rate-limit wait in ms).
pub fn publish_http(in_flight: usize, limit: usize, last_wait_ms: Option<u64>) {
    if preloaded() {
        HTTP_IN_FLIGHT.get().store(in_flight as i32, Ordering::Relaxed);
        HTTP_LIMIT.get().store(limit as i32, Ordering::Relaxed);
        if let Some(w) = last_wait_ms {
            HTTP_LAST_WAIT.get().store(w as i64 + 1, Ordering::Relaxed);
        }
    }
}

/// The HTTP path's state as the worker last published it: (requests in flight, their limit, the
/// last rate-limit wait in ms). Zeros and None on a server without the worker.
pub fn http_state() -> (i32, i32, Option<i64>) {
    if !preloaded() {
        return (0, 0, None);
    }
    let w = HTTP_LAST_WAIT.get().load(Ordering::Relaxed);
    (HTTP_IN_FLIGHT.get().load(Ordering::Relaxed), HTTP_LIMIT.get().load(Ordering::Relaxed), (w > 0).then_some(w - 1))
}

pub fn set_scheduler_pid(pid: i32) {
    if preloaded() {
        SCHEDULER_PID.get().store(pid, Ordering::SeqCst);
    }
}

/// True once the worker was asked to stop (SIGTERM). Sticky, unlike pgrx's
/// `BackgroundWorker::sigterm_received()`, which clears the flag it reads: a check deep in a job
/// must never swallow the request the main loop needs to see.
pub fn stopping() -> bool {
    // SAFETY: a sig_atomic_t that the SIGTERM handler sets; a volatile read of a process global
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

/// Applies a changed configuration (SIGHUP) now: the main loop calls it at every pass, and a
/// long job (an embedding drain) between its steps, so a superuser's reload (a smaller egress
/// allowlist, say) takes effect within a step, not after the job.
pub fn reload_if_asked() {
    if pgrx::bgworkers::BackgroundWorker::sighup_received() {
        // SAFETY: the worker's main thread, between transactions
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

/// True when a scheduler worker has announced itself in shared memory.
pub fn scheduler_running() -> bool {
    preloaded() && SCHEDULER_PID.get().load(Ordering::SeqCst) > 0
}

pub fn set_embedder_pid(pid: i32) {
    if preloaded() {
        EMBEDDER_PID.get().store(pid, Ordering::SeqCst);
    }
}

/// Sets the workers' latches now (the scheduler's and the embedder's), if they run.
pub fn wake_now() {
    if !preloaded() {
        return;
    }
    set_latch(SCHEDULER_PID.get().load(Ordering::SeqCst));
    set_latch(EMBEDDER_PID.get().load(Ordering::SeqCst));
}

fn set_latch(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: BackendPidGetProc returns the PGPROC of a live backend or null (checked); setting
    // its latch is what PostgreSQL does to wake a process
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

thread_local! {
    static WAKE_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Wakes the scheduler when this transaction commits (once, however many rows it enqueued), so
/// new work is seen at once instead of after the naptime. Nothing happens on abort.
pub fn wake_at_commit() {
    if !preloaded() || WAKE_PENDING.with(|w| w.get()) {
        return;
    }
    WAKE_PENDING.with(|w| w.set(true));
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
        WAKE_PENDING.with(|w| w.set(false));
        wake_now();
    });
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || {
        WAKE_PENDING.with(|w| w.set(false));
    });
}
