//! C symbols that a released install script names and this version no longer backs with a SQL
//! function. A released script never changes, and it must still load against this library: the
//! upgrade check installs 0.1.0 with it, and so do pg_upgrade and a restore of a database at an
//! older version. Each symbol raises if it is ever called (only an installation that has not run
//! `ALTER EXTENSION quantops UPDATE` still has a function pointing here).

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Declares a removed function's symbols: the V1 info record and a body that raises.
macro_rules! removed {
    ($finfo:ident, $symbol:ident, $sql:literal, $since:literal) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[pg_guard]
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C-unwind" fn $symbol(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                concat!($sql, " was removed in quantops ", $since),
                "run ALTER EXTENSION quantops UPDATE"
            );
        }
    };
}

// 0.1.0's quantops._flag_bench_rust(bigint): the flag benchmark is examples/flag_bench.rs now
removed!(pg_finfo_flag_bench_rust_wrapper, flag_bench_rust_wrapper, "quantops._flag_bench_rust(bigint)", "0.2.0");
