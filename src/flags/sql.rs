//! The SQL surface of feature flags: `flag_enabled` (a plain C-convention function: it reads its
//! jsonb context in place, no text round trip), `evaluate_flag`, `require_flag`, and the cache of
//! compiled flags each backend keeps.
//!
//! The cache: compiled flags per backend, keyed by flag key (unknown keys cached too). Any write
//! to quantops.flags calls `_flags_invalidate()` (a trigger), which queues a relcache
//! invalidation of the table: PostgreSQL delivers it to this backend at the next command of the
//! same transaction (so a transaction sees its own change at once) and to the others when the
//! transaction commits (never before; never at all on rollback). Our relcache callback then
//! clears the cache. Checking it costs a comparison of two integers.

use super::context::{Context, ContextValue};
use super::core::{self as flags, CompiledFlag, Environment, ErrorCode, Evaluation, FlagError};
use crate::error::SqlError;
use crate::{gucs, sql_error};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

impl SqlError for FlagError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
    }
    fn hint(&self) -> Option<String> {
        Some("see the flag definition format in docs/flags.md".into())
    }
}
sql_error!(FlagError);

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("flag \"{key}\" is off{for_}: {reason}")]
    Off { key: String, for_: String, reason: String },
}
impl SqlError for GateError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
    }
    fn hint(&self) -> Option<String> {
        Some("quantops.evaluate_flag(key, context) tells why".into())
    }
}
sql_error!(GateError);

// ---------------------------------------------------------------------------------------------
// the cache

thread_local! {
    /// Bumped by the relcache callback; the cache is valid while its generation equals this.
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// quantops.flags's oid, 0 until looked up (reset on a full invalidation).
    static FLAGS_OID: Cell<u32> = const { Cell::new(0) };
    static CACHE: RefCell<Cache> = RefCell::new(Cache { generation: 0, flags: HashMap::new() });
}

struct Cache {
    generation: u64,
    flags: HashMap<String, Option<Rc<CompiledFlag>>>,
}

unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let ours = FLAGS_OID.with(|o| o.get());
    if relid == pg_sys::InvalidOid || ours == 0 || relid.to_u32() == ours {
        GENERATION.with(|g| g.set(g.get() + 1));
        if relid == pg_sys::InvalidOid {
            FLAGS_OID.with(|o| o.set(0));
        }
    }
}

fn ensure_callback() {
    if !CALLBACK_REGISTERED.with(|c| c.get()) {
        // SAFETY: a backend's main thread; the callback is a plain function that lives as long as
        // the library, and registering once per backend is what the flag below ensures
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0usize)) };
        CALLBACK_REGISTERED.with(|c| c.set(true));
    }
}

fn flags_oid() -> u32 {
    let o = FLAGS_OID.with(|o| o.get());
    if o != 0 {
        return o;
    }
    // a failed read is 0: looked up again at the next call, and a flag change then clears the
    // whole cache (any relcache invalidation does while the oid is unknown)
    let oid =
        crate::spi::pinned(|| crate::spi::read_one::<pg_sys::Oid>("select pg_catalog.to_regclass('quantops.flags')::pg_catalog.oid", &[]))
            .ok()
            .flatten()
            .map(|o| o.to_u32())
            .unwrap_or(0);
    FLAGS_OID.with(|c| c.set(oid));
    oid
}

/// Reads one flag's definition as the extension's owner (the table is not granted to callers:
/// its targeting rules may name users), and compiles it. The read runs under an owner switch with
/// a pinned search_path inside a security-restricted operation: nothing of the caller's
/// environment (operators, functions, temporary objects) takes part in it. A definition that no
/// longer compiles (written by a newer version, say) is an error for evaluate_flag, false for
/// flag_enabled.
fn load(key: &str) -> Result<Option<Rc<CompiledFlag>>, LoadError> {
    let def = crate::spi::as_owner(|| {
        crate::spi::read_one::<JsonB>("select f.definition from quantops.flags f where f.key operator(pg_catalog.=) $1", &[key.into()])
    })
    .and_then(|r| r)
    .map_err(|e| LoadError::Read(e.to_string()))?;
    match def {
        None => Ok(None),
        Some(JsonB(v)) => Ok(Some(Rc::new(CompiledFlag::compile(key, &v).map_err(LoadError::Invalid)?))),
    }
}

/// Why a flag could not be had: its definition does not compile, or reading it failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Invalid(FlagError),
    #[error("reading the flag failed: {0}")]
    Read(String),
}

/// The compiled flag for `key` (None: no such flag), from the cache when it is current.
fn lookup(key: &str) -> Result<Option<Rc<CompiledFlag>>, LoadError> {
    ensure_callback();
    let generation = GENERATION.with(|g| g.get());
    let hit = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.generation != generation {
            c.flags.clear();
            c.generation = generation;
            return None;
        }
        c.flags.get(key).cloned()
    });
    if let Some(h) = hit {
        return Ok(h);
    }
    flags_oid();
    let f = load(key)?;
    // a load that raced an invalidation is not cached
    if GENERATION.with(|g| g.get()) == generation {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.flags.len() > 10_000 {
                c.flags.clear();
            }
            c.flags.insert(key.to_string(), f.clone());
        });
    }
    Ok(f)
}

fn environment() -> Environment {
    match gucs::environment() {
        gucs::FlagEnvironment::Local => Environment::Local,
        gucs::FlagEnvironment::Staging => Environment::Staging,
        gucs::FlagEnvironment::Production => Environment::Production,
    }
}

// ---------------------------------------------------------------------------------------------
// a jsonb context read in place

/// A jsonb object context, read in place: each attribute the flag asks for is looked up in the
/// jsonb's sorted keys (a binary search), nothing is converted up front. A number is given as
/// its text as PostgreSQL normalises it (`42`, `20` for `20.0`, as JavaScript prints it), a
/// string as is, a boolean as a boolean; null, arrays and objects count as missing. Every
/// quantops function reads contexts this way, so they all agree on a flag.
struct JsonbContext {
    root: *mut pg_sys::JsonbContainer,
    object: bool,
    /// normalised number texts handed out by get(), kept until the context is dropped
    texts: std::cell::UnsafeCell<Vec<Box<str>>>,
}

impl JsonbContext {
    /// # Safety
    /// `datum` is a jsonb datum that outlives the context (the function call's arguments).
    unsafe fn new(datum: pg_sys::Datum) -> JsonbContext {
        // SAFETY: the caller passes a live jsonb datum; detoasting returns a pointer to a whole
        // Jsonb (palloc'd in the call's context or the datum itself), whose root container is read
        let (root, object) = unsafe {
            let jb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
            let root = &raw mut (*jb).root;
            // JB_FOBJECT in the container header (a scalar is stored as a one-element array)
            (root, ((*root).header & pg_sys::JB_FOBJECT) != 0)
        };
        JsonbContext { root, object, texts: std::cell::UnsafeCell::new(Vec::new()) }
    }
}

impl Context for JsonbContext {
    fn get(&self, key: &str) -> Option<ContextValue<'_>> {
        if !self.object {
            return None;
        }
        // SAFETY: `root` points into the call's jsonb argument, alive for the whole call (see new);
        // the value found is copied out or its text copied into `texts` before it is returned
        unsafe {
            let mut v: pg_sys::JsonbValue = std::mem::zeroed();
            let found = pg_sys::getKeyJsonValueFromContainer(self.root, key.as_ptr().cast(), key.len() as i32, &mut v);
            if found.is_null() {
                return None;
            }
            match v.type_ {
                pg_sys::jbvType::jbvString => {
                    let st = v.val.string;
                    let bytes = std::slice::from_raw_parts(st.val as *const u8, st.len.max(0) as usize);
                    std::str::from_utf8(bytes).ok().map(ContextValue::Str)
                }
                pg_sys::jbvType::jbvBool => Some(ContextValue::Bool(v.val.boolean)),
                pg_sys::jbvType::jbvNumeric => {
                    let c = pg_sys::numeric_normalize(v.val.numeric);
                    let text: Box<str> = std::ffi::CStr::from_ptr(c).to_str().unwrap_or("").into();
                    pg_sys::pfree(c.cast());
                    // the Box's heap text never moves; the Vec only grows while self lives
                    let texts = &mut *self.texts.get();
                    texts.push(text);
                    let s: &str = texts.last().map(|b| &**b).unwrap_or("");
                    Some(ContextValue::Str(&*(s as *const str)))
                }
                _ => None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// flag_enabled: the hot path, C calling convention

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_quantops_flag_enabled() -> &'static pg_sys::Pg_finfo_record {
    static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `quantops.flag_enabled(key text, context jsonb default '{}') returns boolean`: whether the flag
/// is on for this context in quantops.environment. Never raises for an unknown flag or a bad
/// context (false); usable in RLS policies.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn quantops_flag_enabled(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls this with a valid fcinfo whose args array holds nargs entries
    let (nargs, args) = unsafe {
        let nargs = (*fcinfo).nargs as usize;
        (nargs, (*fcinfo).args.as_slice(nargs))
    };
    let out = |b: bool| pg_sys::Datum::from(b);
    if nargs < 1 || args[0].isnull {
        return out(false);
    }
    // SAFETY: argument 0 is a non-null text datum (declared text, checked for null above)
    let key = unsafe {
        let key_ptr = pg_sys::pg_detoast_datum_packed(args[0].value.cast_mut_ptr());
        pgrx::varlena::text_to_rust_str(key_ptr).unwrap_or("")
    };
    let flag = match lookup(key) {
        Ok(Some(f)) => f,
        _ => return out(false),
    };
    let env = environment();
    if nargs < 2 || args[1].isnull {
        let empty = Map::new();
        return out(flag.evaluate(env, &empty).value);
    }
    // SAFETY: argument 1 is a non-null jsonb datum that outlives this call's evaluation
    let ctx = unsafe { JsonbContext::new(args[1].value) };
    if !ctx.object {
        return out(false);
    }
    out(flag.evaluate(env, &ctx).value)
}

// ---------------------------------------------------------------------------------------------
// evaluate_flag, require_flag and the writers' helpers

/// One resolution in OpenFeature's vocabulary.
struct Resolution {
    value: bool,
    variant: Option<String>,
    payload: Option<Value>,
    reason: &'static str,
    code: Option<&'static str>,
    message: Option<String>,
    rule: Option<i32>,
}

fn error_resolution(code: ErrorCode, message: String) -> Resolution {
    let e = Evaluation::error(code, false);
    Resolution {
        value: e.value,
        variant: None,
        payload: None,
        reason: e.reason.as_str(),
        code: e.error_code.map(|c| c.as_str()),
        message: Some(message),
        rule: None,
    }
}

impl Resolution {
    /// Copies an evaluation out of the compiled flag (and the context it read).
    fn of(e: Evaluation<'_>) -> Resolution {
        Resolution {
            value: e.value,
            variant: e.variant.map(str::to_string),
            payload: e.payload.cloned(),
            reason: e.reason.as_str(),
            code: e.error_code.map(|c| c.as_str()),
            message: None,
            rule: e.rule.map(|r| r as i32 + 1),
        }
    }
}

/// The whole resolution for the jsonb context argument `arg` of this call (read in place, as
/// flag_enabled reads it; a NULL context is an empty one).
unsafe fn resolve_arg(key: &str, fcinfo: pg_sys::FunctionCallInfo, arg: usize) -> Resolution {
    let flag = match lookup(key) {
        Ok(Some(f)) => f,
        Ok(None) => return error_resolution(ErrorCode::FlagNotFound, format!("flag \"{key}\" does not exist")),
        Err(LoadError::Invalid(err)) => return error_resolution(ErrorCode::ParseError, err.to_string()),
        Err(LoadError::Read(err)) => return error_resolution(ErrorCode::General, err),
    };
    // SAFETY: the caller passes its own call's fcinfo, whose args array holds nargs entries
    let (nargs, args) = unsafe {
        let nargs = (*fcinfo).nargs as usize;
        (nargs, (*fcinfo).args.as_slice(nargs))
    };
    let env = environment();
    if arg >= nargs || args[arg].isnull {
        return Resolution::of(flag.evaluate(env, &Map::new()));
    }
    // SAFETY: argument `arg` is a non-null jsonb datum of this call
    let ctx = unsafe { JsonbContext::new(args[arg].value) };
    if !ctx.object {
        return error_resolution(ErrorCode::InvalidContext, "context must be a json object".into());
    }
    Resolution::of(flag.evaluate(env, &ctx))
}

/// Evaluates a flag for a context: value, variant, payload, reason (STATIC, TARGETING_MATCH,
/// SPLIT, DISABLED, DEFAULT, ERROR), error code (FLAG_NOT_FOUND, PARSE_ERROR, INVALID_CONTEXT),
/// the deciding rule (from 1). Never raises for an unknown flag. With quantops.flag_exposure_sample
/// above 0, a sample of evaluations is logged in quantops.flag_exposures.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn evaluate_flag(
    fcinfo: pg_sys::FunctionCallInfo,
    key: Option<&str>,
    context: default!(Option<JsonB>, "'{}'"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(value, bool),
            name!(variant, Option<String>),
            name!(payload, Option<JsonB>),
            name!(reason, String),
            name!(error_code, Option<String>),
            name!(error_message, Option<String>),
            name!(rule, Option<i32>),
        ),
    >,
    ErrorReport,
> {
    let key = key.unwrap_or("");
    // SAFETY: pgrx hands over this call's own fcinfo; argument 1 is declared jsonb
    let r = unsafe { resolve_arg(key, fcinfo, 1) };
    let rate = gucs::flag_exposure_sample();
    // anon writes nothing, and a read-only transaction (PostgREST's GET, a replica) is not failed
    // for the sake of a sample
    if rate > 0.0 && r.reason != "ERROR" && !crate::spi::caller_is_anon() && !crate::spi::read_only() && sampled(rate) {
        let ctx = context.map(|j| j.0).unwrap_or_else(|| Value::Object(Map::new()));
        log_exposure(key, &r, ctx)?;
    }
    Ok(TableIterator::once((r.value, r.variant, r.payload.map(JsonB), r.reason.to_string(), r.code.map(str::to_string), r.message, r.rule)))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.evaluate_flag(text, jsonb)', 'anon');",
    name = "grant_evaluate_flag",
    requires = [evaluate_flag]
);

/// Writes one exposure row as the extension's owner (no caller may write the table, nor call
/// anything that does).
fn log_exposure(key: &str, r: &Resolution, ctx: Value) -> Result<(), ErrorReport> {
    // the actor column defaults to quantops.uid(): the request's JWT claims, whoever writes
    crate::spi::as_owner(|| {
        Spi::run_with_args(
            "insert into quantops.flag_exposures (flag_key, environment, value, variant, reason, context) \
             values ($1, $2, $3, $4, $5, $6)",
            &[key.into(), environment().name().into(), r.value.into(), r.variant.clone().into(), r.reason.into(), JsonB(ctx).into()],
        )
    })
    .and_then(|x| x)
    .map_err(|e| crate::spi::failed("logging a flag exposure", e))
}

thread_local! {
    static SAMPLE_STATE: Cell<u64> = const { Cell::new(0) };
}

/// A deterministic per-backend stream decides which evaluations are logged.
fn sampled(rate: f64) -> bool {
    let x = SAMPLE_STATE.with(|s| {
        let n = s.get().wrapping_add(1);
        s.set(n);
        // SAFETY: MyProcPid is set once at backend start and only read here
        crate::hash::splitmix64(unsafe { pg_sys::MyProcPid } as u64, n)
    });
    ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// Raises 55000 when the flag is off for the context (for functions and flows that must not run
/// a gated strategy); returns true otherwise.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn require_flag(
    fcinfo: pg_sys::FunctionCallInfo,
    key: Option<&str>,
    context: default!(Option<JsonB>, "'{}'"),
) -> Result<bool, ErrorReport> {
    let key = key.unwrap_or("");
    // SAFETY: pgrx hands over this call's own fcinfo; argument 1 is declared jsonb
    let r = unsafe { resolve_arg(key, fcinfo, 1) };
    if r.value {
        return Ok(true);
    }
    let ctx = context.map(|j| j.0).unwrap_or_else(|| Value::Object(Map::new()));
    let who = ["user_id", "userId", "strategy", "role"]
        .iter()
        .filter_map(|k| ctx.get(*k).map(|v| format!("{k} {v}")))
        .collect::<Vec<_>>()
        .join(", ");
    let why = match (r.code, r.message) {
        (Some(c), Some(m)) => format!("{} ({c}: {m})", r.reason),
        _ => r.reason.to_string(),
    };
    Err(GateError::Off { key: key.to_string(), for_: if who.is_empty() { String::new() } else { format!(" for {who}") }, reason: why }
        .into())
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.require_flag(text, jsonb)', 'anon');",
    name = "grant_require_flag",
    requires = [require_flag]
);

/// Validates a definition (22023 says what is wrong); the trigger on quantops.flags calls it.
#[pg_extern(immutable, parallel_safe, name = "_flag_check")]
#[search_path(pg_catalog, pg_temp)]
fn flag_check(key: &str, definition: JsonB) -> Result<bool, ErrorReport> {
    flags::validate(key, &definition.0)?;
    Ok(true)
}

/// Queues the relcache invalidation of quantops.flags (the write trigger calls it).
#[pg_extern(volatile, name = "_flags_invalidate")]
#[search_path(pg_catalog, pg_temp)]
fn flags_invalidate() {
    let oid = flags_oid();
    if oid != 0 {
        // SAFETY: inside a transaction (a trigger calls it); the oid is quantops.flags'
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(pg_sys::Oid::from(oid)) };
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn flag_in_a_transaction_sees_its_own_change() {
        Spi::run("select quantops.set_flag('t.one', '{\"environments\": {\"production\": true}}')").unwrap();
        assert_eq!(Spi::get_one::<bool>("select quantops.flag_enabled('t.one')").unwrap(), Some(true));
        Spi::run("select quantops.kill_flag('t.one')").unwrap();
        assert_eq!(Spi::get_one::<bool>("select quantops.flag_enabled('t.one')").unwrap(), Some(false));
        assert_eq!(Spi::get_one::<bool>("select quantops.flag_enabled('no.such.flag')").unwrap(), Some(false));
    }
}
