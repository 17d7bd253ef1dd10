//! `_gates_passed(key)` / `_gates_consume(key)`: promote() has just checked the gates of
//! (model, alias, version) and is about to write the alias; the constraint trigger consumes the
//! token instead of running the same queries again. The token lives in this backend only, for
//! this transaction only (keyed by its local transaction id), is consumed once, and only the
//! extension's owner may set it (EXECUTE is not granted to anyone), so a direct write by any role
//! is always checked in full.

use pgrx::prelude::*;
use std::cell::RefCell;

thread_local! {
    static TOKEN: RefCell<Option<(u32, String)>> = const { RefCell::new(None) };
}

fn lxid() -> u32 {
    unsafe {
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

#[pg_extern(volatile, parallel_unsafe, name = "_gates_passed")]
fn gates_passed(key: &str) -> bool {
    TOKEN.with(|t| *t.borrow_mut() = Some((lxid(), key.to_string())));
    true
}

#[pg_extern(volatile, parallel_unsafe, name = "_gates_consume")]
fn gates_consume(key: &str) -> bool {
    TOKEN.with(|t| {
        let mut t = t.borrow_mut();
        let hit = matches!(&*t, Some((x, k)) if *x == lxid() && k == key);
        *t = None;
        hit
    })
}
