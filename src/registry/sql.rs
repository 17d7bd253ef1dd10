//! `_gates_passed(key)` / `_gates_consume(key)`: promote() has just checked the gates of
//! (model, alias, version) and is about to write the alias; the constraint trigger consumes the
//! token instead of running the same queries again. The token lives in this backend only, for
//! this transaction only (keyed by its local transaction id), is consumed once, and only code
//! running as the extension's owner may set or consume it: EXECUTE is granted to nobody, and both
//! functions refuse (42501) a current user other than the owner, so neither a grant made later by
//! mistake nor a role that holds one (Supabase's postgres may UPDATE an alias directly) can turn
//! off the full check of its own direct write.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;

thread_local! {
    static TOKEN: RefCell<Option<(u32, String)>> = const { RefCell::new(None) };
}

/// This backend's local transaction id: the token is valid in this transaction only.
fn lxid() -> u32 {
    // SAFETY: MyProc is this backend's own PGPROC, set for the life of the process
    unsafe {
        // PostgreSQL 17 keeps the local transaction id in PGPROC's virtual transaction id
        // (`vxid.lxid`); 15 has `lxid` directly in PGPROC. The one difference of server API that
        // quantops' code meets.
        #[cfg(feature = "pg17")]
        {
            (*pg_sys::MyProc).vxid.lxid
        }
        #[cfg(not(feature = "pg17"))]
        {
            (*pg_sys::MyProc).lxid
        }
    }
}

/// Only promote() and the gates' trigger, both SECURITY DEFINER functions of the extension's
/// owner, use the token. The owner of quantops is a superuser (its control file says
/// `superuser = true`), so the check is that the current user is one: a cached flag, no query,
/// on the promotion's hot path. Supabase's postgres, service_role and every API role are refused.
fn require_owner(what: &str) -> Result<(), ErrorReport> {
    // SAFETY: superuser() reads the current user's cached role attributes
    if unsafe { pg_sys::superuser() } {
        return Ok(());
    }
    Err(ErrorReport::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("permission denied for function {what}"), "quantops")
        .set_detail("only quantops.promote() may vouch for the gates it has just checked"))
}

#[pg_extern(volatile, parallel_unsafe, name = "_gates_passed")]
#[search_path(pg_catalog, pg_temp)]
fn gates_passed(key: &str) -> Result<bool, ErrorReport> {
    require_owner("_gates_passed")?;
    TOKEN.with(|t| *t.borrow_mut() = Some((lxid(), key.to_string())));
    Ok(true)
}

#[pg_extern(volatile, parallel_unsafe, name = "_gates_consume")]
#[search_path(pg_catalog, pg_temp)]
fn gates_consume(key: &str) -> Result<bool, ErrorReport> {
    require_owner("_gates_consume")?;
    Ok(TOKEN.with(|t| {
        let mut t = t.borrow_mut();
        let hit = matches!(&*t, Some((x, k)) if *x == lxid() && k == key);
        *t = None;
        hit
    }))
}
