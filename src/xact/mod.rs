//! Transactions that quantops opens itself (the worker's steps; never inside a SQL function):
//! `in_transaction` runs a closure in one, `toplevel::run` runs one statement as a top-level
//! command. The bottom of the crate: it imports nothing of quantops.
pub mod toplevel;

use pgrx::prelude::*;

/// Runs `f` in its own transaction. A Postgres ERROR (or a Rust panic) inside is caught, the
/// transaction aborted, and the message returned, so the worker lives on to record it.
pub fn in_transaction<R, F: FnOnce() -> R + std::panic::UnwindSafe>(f: F) -> Result<R, String> {
    // SAFETY: the worker's main thread, outside any transaction (the caller's contract): starts
    // one and pushes its snapshot, undone below on every path
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = PgTryBuilder::new(move || Ok(f())).catch_others(|e| Err(caught_message(e))).execute();
    // SAFETY: ends the transaction started above: commits after popping the snapshot, or aborts
    // (which releases the snapshot too)
    unsafe {
        match &r {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    r
}

/// The message of an ERROR (or a Rust panic) caught around a step of the worker.
pub(crate) fn caught_message(e: pg_sys::panic::CaughtError) -> String {
    match e {
        pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}
