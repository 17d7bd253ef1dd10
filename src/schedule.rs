//! The job registry: every job quantops runs, declared once by the capability it belongs to
//! (its name, the period `quantops.jobs` starts with, and the function that runs it), plus what
//! a capability does on every pass of the worker. `_PG_init` registers the capabilities; the
//! scheduler worker and `quantops.run_job` read the registry and nothing else. Pure: it imports
//! nothing of quantops, so every layer may register with it and nothing in it calls up.

use std::sync::OnceLock;

/// What a finished job reports.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub rows: i64,
    pub details: serde_json::Value,
}

/// A job's body. `Err` is a job failure: recorded in `quantops.job_runs`, not raised.
pub type Body = fn() -> Result<JobOutcome, String>;

/// One job.
pub struct Job {
    /// Its name in `quantops.jobs`, `quantops.run_job(name)` and pg_cron commands.
    pub name: &'static str,
    /// The period its row in `quantops.jobs` is installed with (an interval literal), or None for
    /// a job with no row there: run on request (`run_job`) and, by the worker, on every pass. The
    /// install script seeds the rows; a test holds the two equal.
    pub every: Option<&'static str>,
    /// Runs it in the caller's transaction: `run_job()` from SQL and pg_cron, and the worker
    /// (inside one transaction of its own) unless `worker_body` is set.
    pub body: Body,
    /// How the worker runs it when that differs: managing its own transactions (a committed
    /// batch each, statements that must run top-level).
    pub worker_body: Option<Body>,
}

/// A capability's part in the worker: its jobs, and what it does on every pass and at start.
pub struct Capability {
    pub name: &'static str,
    pub jobs: &'static [Job],
    /// Runs on every pass of the worker's loop, outside any transaction (each step opens its own):
    /// work that is drained continuously rather than on a period.
    pub each_pass: Option<fn()>,
    /// Runs once when the worker starts, inside a transaction: cleans up what an earlier
    /// incarnation of the worker left running (kill -9, crash, immediate shutdown).
    pub on_worker_start: Option<fn()>,
}

static REGISTRY: OnceLock<&'static [&'static Capability]> = OnceLock::new();

/// Registers the capabilities, in the order the worker runs their passes. The first call wins
/// (every process calls it from `_PG_init`, once).
pub fn register(caps: &'static [&'static Capability]) {
    let _ = REGISTRY.set(caps);
}

/// Every registered capability.
pub fn capabilities() -> &'static [&'static Capability] {
    REGISTRY.get().copied().unwrap_or(&[])
}

/// Every registered job, in registration order.
pub fn jobs() -> impl Iterator<Item = &'static Job> {
    capabilities().iter().flat_map(|c| c.jobs.iter())
}

/// The job called `name`.
pub fn find(name: &str) -> Option<&'static Job> {
    jobs().find(|j| j.name == name)
}

/// The names of every job, comma separated (for hints).
pub fn names() -> String {
    jobs().map(|j| j.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<JobOutcome, String> {
        Ok(JobOutcome { rows: 1, details: serde_json::json!({}) })
    }

    static A: Capability = Capability {
        name: "a",
        jobs: &[Job { name: "one", every: Some("1 minute"), body: ok, worker_body: None }],
        each_pass: None,
        on_worker_start: None,
    };
    static B: Capability = Capability {
        name: "b",
        jobs: &[Job { name: "two", every: None, body: ok, worker_body: Some(ok) }],
        each_pass: None,
        on_worker_start: None,
    };

    #[test]
    fn jobs_are_found_by_name_in_registration_order() {
        static BOTH: &[&Capability] = &[&A, &B];
        static ONLY_B: &[&Capability] = &[&B];
        register(BOTH);
        // a second registration changes nothing
        register(ONLY_B);
        assert_eq!(names(), "one, two");
        assert_eq!(find("two").map(|j| j.every), Some(None));
        assert!(find("drop-everything").is_none());
        assert_eq!((find("one").unwrap().body)().unwrap().rows, 1);
    }
}
