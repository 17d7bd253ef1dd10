//! Runs one SQL statement as a top-level command of the worker, the way pg_cron runs a
//! single-statement job: parsed and planned in a memory context that outlives transactions,
//! executed through an unnamed portal with isTopLevel = true. This is what lets the worker run
//! statements that refuse to run inside a function or a transaction block: CREATE INDEX
//! CONCURRENTLY, REINDEX ... CONCURRENTLY, DROP INDEX CONCURRENTLY (they commit on their own).
//! Only for the worker; never called from a SQL function.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;

/// Runs `sql` (exactly one statement) in its own transaction. An ERROR is caught, the
/// transaction aborted, and the message returned.
pub fn run(sql: &str) -> Result<(), String> {
    let csql = CString::new(sql).map_err(|_| "statement contains a NUL byte".to_string())?;
    // SAFETY: the worker's main thread, outside any transaction: starts one
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
    }
    // SAFETY: a memory context under TopMemoryContext, deleted below on every path
    let parse_ctx = unsafe {
        pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"quantops top-level statement".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as _,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as _,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as _,
        )
    };
    let ptr = csql.as_ptr();
    // SAFETY: the statement text outlives the portal (csql lives to the end); parse, analysis,
    // plans and portal live in parse_ctx, which survives the commits inside PortalRun; an ERROR is
    // caught by PgTryBuilder and the transaction aborted below
    let r = PgTryBuilder::new(move || unsafe {
        let old = pg_sys::MemoryContextSwitchTo(parse_ctx);
        let parsed = pg_sys::pg_parse_query(ptr);
        pg_sys::MemoryContextSwitchTo(old);
        let n = if parsed.is_null() { 0 } else { (*parsed).length };
        if n != 1 {
            return Err(format!("expected one statement, got {n}"));
        }
        let raw = pg_sys::list_nth(parsed, 0) as *mut pg_sys::RawStmt;
        let tag = pg_sys::CreateCommandTag((*raw).stmt);
        let snap = pg_sys::analyze_requires_snapshot(raw);
        if snap {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        // analysis, plans, portal and receiver must survive the commits inside PortalRun
        let old = pg_sys::MemoryContextSwitchTo(parse_ctx);
        let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(raw, ptr, std::ptr::null_mut(), 0, std::ptr::null_mut());
        let plans = pg_sys::pg_plan_queries(queries, ptr, 0, std::ptr::null_mut());
        if snap {
            pg_sys::PopActiveSnapshot();
        }
        let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
        (*portal).visible = false;
        pg_sys::PortalDefineQuery(portal, std::ptr::null(), ptr, tag, plans, std::ptr::null_mut());
        pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
        let receiver = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
        pg_sys::MemoryContextSwitchTo(old);
        let mut qc: pg_sys::QueryCompletion = std::mem::zeroed();
        pg_sys::PortalRun(portal, i64::MAX as _, true, true, receiver, receiver, &mut qc);
        if let Some(destroy) = (*receiver).rDestroy {
            destroy(receiver);
        }
        pg_sys::PortalDrop(portal, false);
        Ok(())
    })
    .catch_others(|e| Err(super::caught_message(e)))
    .execute();
    // SAFETY: ends the transaction started above (commit, or abort after an ERROR) and frees the
    // context made for the statement
    unsafe {
        match &r {
            Ok(_) => pg_sys::CommitTransactionCommand(),
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
        pg_sys::MemoryContextDelete(parse_ctx);
    }
    r
}
