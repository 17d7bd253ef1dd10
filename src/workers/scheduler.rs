//! The scheduler worker: connects to `quantops.database`, keeps a heartbeat in
//! `quantops.workers`, and runs due jobs from `quantops.jobs`, each recorded in
//! `quantops.job_runs`. One short transaction per step; all state lives in tables, so a crash or
//! kill -9 loses nothing and a restart resumes. The postmaster restarts it after a crash.

use crate::runtime::{reload_if_asked, set_scheduler_pid, stopping};
use crate::schedule;
use crate::spi::ReportError;
use crate::xact::in_transaction;
use crate::{gucs, jobs};
use pgrx::bgworkers::*;
use pgrx::prelude::*;

pub const NAME: &str = "quantops scheduler";

pub fn register() {
    super::register_worker(NAME, "quantops_scheduler_main");
}

fn heartbeat(state: &str, started: &str) {
    crate::spi::run(
        "recording the heartbeat",
        "insert into quantops.workers (name, pid, database, started_at, heartbeat_at, naptime_s, state) \
         values ($1, pg_catalog.pg_backend_pid(), pg_catalog.current_database(), $2::timestamptz, pg_catalog.now(), $3, $4) \
         on conflict (name) do update set pid = excluded.pid, database = excluded.database, \
           started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
           naptime_s = excluded.naptime_s, state = excluded.state",
        &[NAME.into(), started.into(), (gucs::naptime().as_secs() as i32).into(), state.into()],
    );
}

/// Claims the next due job (moving its next_run_at forward) or returns None.
fn claim_due_job() -> Option<String> {
    crate::spi::write_one::<String>(
        "update quantops.jobs j set next_run_at = pg_catalog.now() + j.run_every \
         where j.name = (select name from quantops.jobs where enabled and next_run_at <= pg_catalog.now() \
                         order by next_run_at limit 1 for update skip locked) \
         returning j.name",
        &[],
    )
    .unwrap_or_else(|e| crate::spi::failed("claiming a due job", e).report_error())
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn quantops_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    super::harden_session();
    log!("{NAME} started in database \"{db}\"");
    // SAFETY: MyProcPid is set once at process start and only read
    set_scheduler_pid(unsafe { pg_sys::MyProcPid });
    let started: String = in_transaction(|| Spi::get_one::<String>("select pg_catalog.now()::text").ok().flatten())
        .ok()
        .flatten()
        .unwrap_or_else(|| "now".into());
    let mut warned_missing = false;
    let mut marked_interrupted = false;

    // the first pass runs at once; later ones after each naptime (or a wake-up)
    let mut first = true;
    // stopping() first: a wait inside a job (the HTTP step's) may have consumed the latch that
    // SIGTERM set, and the naptime must not be slept through after a stop was asked for
    while first || (!stopping() && BackgroundWorker::wait_latch(Some(gucs::naptime())) && !stopping()) {
        first = false;
        reload_if_asked();
        if stopping() {
            break;
        }
        let installed = match in_transaction(super::extension_installed) {
            Ok(i) => i,
            Err(e) => {
                warning!("{NAME}: checking for the extension failed: {e}");
                continue;
            }
        };
        if !installed {
            if !warned_missing {
                log!("{NAME}: extension quantops is not installed in database \"{db}\"; waiting");
                warned_missing = true;
            }
            continue;
        }
        warned_missing = false;
        if !marked_interrupted {
            // runs of an earlier incarnation of this worker (kill -9, crash, immediate shutdown)
            marked_interrupted = in_transaction(|| {
                super::mark_interrupted("worker");
                for c in schedule::capabilities() {
                    if let Some(f) = c.on_worker_start {
                        f();
                    }
                }
            })
            .map_err(|e| warning!("{NAME}: marking interrupted runs failed: {e}"))
            .is_ok();
        }
        let enabled = gucs::enabled();
        let st = started.clone();
        if let Err(e) = in_transaction(move || heartbeat(if enabled { "running" } else { "disabled" }, &st)) {
            warning!("{NAME}: heartbeat failed: {e}");
            continue;
        }
        if !enabled {
            continue;
        }
        // run every job that is due, each in its own transactions
        for _ in 0..64 {
            if stopping() {
                break;
            }
            let job = match in_transaction(claim_due_job) {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(e) => {
                    warning!("{NAME}: claiming a due job failed: {e}");
                    break;
                }
            };
            run_one(&job);
        }
        // continuous work (the embedding queue, woken at once when work is committed; queued
        // rebuilds), in registration order
        for c in schedule::capabilities() {
            if let Some(f) = c.each_pass {
                if stopping() {
                    break;
                }
                f();
            }
        }
    }
    // leave a truthful record on the way out
    let _ = in_transaction(|| {
        crate::spi::run(
            "recording the stop",
            "update quantops.workers set state = 'stopped', heartbeat_at = pg_catalog.now() where name = $1 and pid = pg_catalog.pg_backend_pid()",
            &[NAME.into()],
        )
    });
    set_scheduler_pid(0);
    log!("{NAME} stopped");
}

fn run_one(job: &str) {
    let j = job.to_string();
    let id = match in_transaction(move || jobs::store::begin_run(&j, "worker")) {
        Ok(id) => id,
        Err(e) => {
            warning!("{NAME}: could not record the start of job \"{job}\": {e}");
            return;
        }
    };
    // a job row the registry does not know (a newer version's, say) fails its run, recorded
    let result = match schedule::find(job) {
        // the job manages its own transactions (a batch each; top-level statements)
        Some(schedule::Job { worker_body: Some(f), .. }) => f(),
        Some(schedule::Job { body, .. }) => {
            let body = *body;
            in_transaction(body).and_then(|r| r)
        }
        None => Err(format!("job \"{job}\" has no implementation in this version of quantops")),
    };
    if let Err(e) = &result {
        warning!("{NAME}: job \"{job}\" failed: {e}");
    }
    if let Err(e) = in_transaction(move || jobs::store::finish_run(id, &result)) {
        warning!("{NAME}: could not record the end of job \"{job}\": {e}");
    }
}
