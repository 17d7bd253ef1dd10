//! The error model. Each capability has its own `thiserror` enum; every variant maps to a real
//! SQLSTATE, a message in Postgres's own style (lower case, no trailing period, identifiers
//! quoted, no secrets), and, where it helps, a detail and a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// What every capability error tells Postgres about itself.
pub trait SqlError: std::fmt::Display {
    fn sqlstate(&self) -> PgSqlErrorCode;
    fn detail(&self) -> Option<String> {
        None
    }
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Turns any capability error into the report that `#[pg_extern]` raises.
pub fn report<E: SqlError>(e: E) -> ErrorReport {
    let mut r = ErrorReport::new(e.sqlstate(), e.to_string(), "quantops");
    if let Some(d) = e.detail() {
        r = r.set_detail(d);
    }
    if let Some(h) = e.hint() {
        r = r.set_hint(h);
    }
    r
}

/// Implements `From<E> for ErrorReport` for a capability's error enum.
#[macro_export]
macro_rules! sql_error {
    ($t:ty) => {
        impl From<$t> for pgrx::pg_sys::panic::ErrorReport {
            fn from(e: $t) -> Self {
                $crate::error::report(e)
            }
        }
    };
}

/// The five-character SQLSTATE of a code, for tests and logs.
pub fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let c = code as i32;
    (0..5).map(|i| (((c >> (6 * i)) & 0x3F) as u8 + b'0') as char).collect()
}

/// Raises an ERROR with a real SQLSTATE where a function cannot return a `Result` (a helper deep
/// in a batch, a trigger's callee). The message follows PostgreSQL's style.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "quantops").report(pgrx::PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_read_like_postgres() {
        assert_eq!(sqlstate_text(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE), "22023");
        assert_eq!(sqlstate_text(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT), "42704");
        assert_eq!(sqlstate_text(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE), "42501");
        assert_eq!(sqlstate_text(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), "55000");
        assert_eq!(sqlstate_text(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED), "22004");
    }
}
