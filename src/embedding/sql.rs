//! The embedding refresh's SQL surface: register and activate embedders, refresh, sweep, retry,
//! and the batch step that the scheduler worker runs in its own transactions.

use super::core::{self as emb, Embedded, Embedder, Features, SignalInput};
use super::jsonb::JsonbBytes;
use crate::error::SqlError;
use crate::spi::{run, vector_schema, ReportError};
use crate::{audit, sql_error};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("{0} must not be null")]
    Null(&'static str),
    #[error("invalid embedder: {0}")]
    Invalid(String),
    #[error("embedder \"{0}\" does not exist")]
    Unknown(String),
    #[error("embedder \"{name}\" version {version} does not exist")]
    UnknownVersion { name: String, version: i32 },
    #[error("no embedder is active")]
    NoneActive,
    #[error("embedder \"{0}\" is an http embedder")]
    HttpInSql(String),
    #[error("embedder dims {dims} do not match the configured dims ({})", configured.map(|c| c.to_string()).unwrap_or_else(|| "none".into()))]
    Dims { dims: i32, configured: Option<i32> },
    #[error("invalid {what}: {why}")]
    Argument { what: &'static str, why: String },
    #[error("{0}")]
    Egress(super::egress::EgressError),
    #[error("{0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl SqlError for EmbeddingError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            EmbeddingError::Null(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            EmbeddingError::Invalid(_) | EmbeddingError::Argument { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            EmbeddingError::Unknown(_) | EmbeddingError::UnknownVersion { .. } => ERRCODE_UNDEFINED_OBJECT,
            EmbeddingError::NoneActive | EmbeddingError::HttpInSql(_) | EmbeddingError::Dims { .. } => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            EmbeddingError::Egress(super::egress::EgressError::NotAllowed { .. }) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            EmbeddingError::Egress(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            // SPI itself failed (a PostgreSQL ERROR keeps its own SQLSTATE): a bug in quantops
            EmbeddingError::Spi(_) => ERRCODE_INTERNAL_ERROR,
        }
    }
    fn detail(&self) -> Option<String> {
        match self {
            EmbeddingError::HttpInSql(_) => Some(
                "an http provider is called only from the scheduler worker, never inside an open transaction".into(),
            ),
            _ => None,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            EmbeddingError::NoneActive => {
                Some("register one with quantops.register_embedder(..., activate => true)".into())
            }
            EmbeddingError::HttpInSql(_) => Some(
                "put quantops in shared_preload_libraries; the worker drains the queue (see quantops.embedding_status)".into(),
            ),
            EmbeddingError::Dims { .. } => Some("run quantops.configure(dims => ...) first, or register the embedder with the configured dims".into()),
            EmbeddingError::Egress(super::egress::EgressError::NotAllowed { .. }) => Some(
                "a superuser adds the host to quantops.embedding_allowed_hosts (ALTER SYSTEM, then pg_reload_conf())".into(),
            ),
            EmbeddingError::Egress(super::egress::EgressError::KeyInClear { .. }) => Some("use an https:// url".into()),
            EmbeddingError::Unknown(_) | EmbeddingError::UnknownVersion { .. } => {
                Some("see select name, version, kind, active from quantops.embedders".into())
            }
            _ => None,
        }
    }
}
sql_error!(EmbeddingError);

thread_local! {
    /// Embedder versions never change, so a backend may keep what it parsed.
    static CACHE: RefCell<HashMap<(String, i32), Embedder>> = RefCell::new(HashMap::new());
}

fn load(name: &str, version: i32) -> Result<Embedder, EmbeddingError> {
    if let Some(e) = CACHE.with(|c| c.borrow().get(&(name.to_string(), version)).cloned()) {
        return Ok(e);
    }
    let row = Spi::connect(|c| -> Result<Option<(String, i32, JsonB)>, pgrx::spi::SpiError> {
        let t = c.select(
            "select kind, dims, params from quantops.embedders where name = $1 and version = $2",
            None,
            &[name.into(), version.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        // every column is NOT NULL
        Ok(match (r.get::<String>(1)?, r.get::<i32>(2)?, r.get::<JsonB>(3)?) {
            (Some(k), Some(d), Some(p)) => Some((k, d, p)),
            _ => None,
        })
    })?;
    let (kind, dims, params) = row.ok_or_else(|| EmbeddingError::UnknownVersion { name: name.into(), version })?;
    let e = Embedder::parse(name, version, &kind, dims, &params.0).map_err(|e| EmbeddingError::Invalid(e.to_string()))?;
    CACHE.with(|c| c.borrow_mut().insert((name.to_string(), version), e.clone()));
    Ok(e)
}

/// The active embedder, if any. A failed read is an error, never "none is active".
pub fn active() -> Result<Option<Embedder>, EmbeddingError> {
    let (name, version): (Option<String>, Option<i32>) =
        crate::spi::read_two("select name, version from quantops.embedders where active", &[])?;
    match (name, version) {
        (Some(n), Some(v)) => load(&n, v).map(Some),
        _ => Ok(None),
    }
}

fn configured_dims() -> Result<Option<i32>, EmbeddingError> {
    Ok(crate::spi::read_one("select embedding_dims from quantops.settings", &[])?)
}

/// Registers the next version of an embedder (version 1 for a new name). Returns the version.
#[pg_extern]
fn register_embedder(
    name: Option<&str>,
    kind: Option<&str>,
    dims: Option<i32>,
    params: default!(Option<JsonB>, "'{}'"),
    activate: default!(Option<bool>, "false"),
) -> Result<i32, ErrorReport> {
    crate::spi::require_primary("register_embedder")?;
    let started = Instant::now();
    let name = name.ok_or(EmbeddingError::Null("name"))?;
    let kind = kind.ok_or(EmbeddingError::Null("kind"))?;
    let dims = dims.ok_or(EmbeddingError::Null("dims"))?;
    let params = params.map(|p| p.0).unwrap_or_else(|| json!({}));
    if !name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(EmbeddingError::Argument {
            what: "name",
            why: format!("\"{name}\" must be 1 to 63 of a-z, 0-9, _ and -, starting with a letter"),
        }
        .into());
    }
    if params.to_string().contains("api_key\"") && !params.get("api_key_secret").is_some() {
        return Err(EmbeddingError::Argument {
            what: "params",
            why: "an API key never goes into a readable table".into(),
        }
        .into());
    }
    let parsed = Embedder::parse(name, 1, kind, dims, &params).map_err(|e| EmbeddingError::Invalid(e.to_string()))?;
    // the worker (a superuser process holding the provider's key) only calls hosts a superuser
    // allowed, and sends a key only over https or to this machine
    if let super::core::Kind::Http(h) = &parsed.kind {
        if let Some(secret) = &h.api_key_secret {
            super::egress::check_secret_name(secret).map_err(EmbeddingError::Egress)?;
        }
        let sends_key = h.api_key_secret.is_some() || crate::gucs::embedding_api_key_file().is_some();
        super::egress::check(&h.url, &crate::gucs::embedding_allowed_hosts(), sends_key).map_err(EmbeddingError::Egress)?;
    }
    let configured = configured_dims()?;
    if configured != Some(dims) {
        return Err(EmbeddingError::Dims { dims, configured }.into());
    }
    // an aggregate over the name always yields a row, so the insert always returns its version
    let version: i32 = crate::spi::write_one(
        "insert into quantops.embedders (name, version, kind, dims, params) \
         select $1, coalesce(max(version), 0) + 1, $2, $3, $4 from quantops.embedders where name = $1 \
         returning version",
        &[name.into(), kind.into(), dims.into(), JsonB(params.clone()).into()],
    )
    .map_err(EmbeddingError::from)?
    .unwrap_or(1);
    audit::sql::record_call(
        "register_embedder",
        json!({ "name": name, "kind": kind, "dims": dims, "params": params }),
        Some(json!({ "version": version })),
        started,
    );
    if activate.unwrap_or(false) {
        activate_embedder(name, version)?;
    }
    Ok(version)
}

fn activate_embedder(name: &str, version: i32) -> Result<i64, EmbeddingError> {
    let started = Instant::now();
    load(name, version)?;
    run("deactivating embedders", "update quantops.embedders set active = false where active and (name, version) <> ($1, $2)", &[name.into(), version.into()]);
    run("activating the embedder", "update quantops.embedders set active = true where name = $1 and version = $2", &[name.into(), version.into()]);
    // every row made by another embedder (or none) is stale now; old vectors stay searchable
    // until the refresh replaces them
    let n: i64 = crate::spi::write_one(
        "with ins as (insert into quantops.embedding_queue (signal_id) \
            select id from quantops.signal_embeddings \
            where embedder is distinct from $1 or embedder_version is distinct from $2::text \
            on conflict (signal_id) do nothing returning 1) select count(*) from ins",
        &[name.into(), version.into()],
    )?
    .unwrap_or(0);
    audit::sql::record_call("set_embedder", json!({ "name": name, "version": version }), Some(json!({ "enqueued": n })), started);
    crate::workers::wake_at_commit();
    Ok(n)
}

/// Makes an embedder version the configured one (the newest when version is null) and enqueues
/// every row that another embedder made.
#[pg_extern]
fn set_embedder(name: Option<&str>, version: default!(Option<i32>, "NULL")) -> Result<JsonB, ErrorReport> {
    crate::spi::require_primary("set_embedder")?;
    let name = name.ok_or(EmbeddingError::Null("name"))?;
    let version = match version {
        Some(v) => v,
        None => crate::spi::read_one::<i32>("select max(version) from quantops.embedders where name = $1", &[name.into()])
            .map_err(EmbeddingError::from)?
            .ok_or_else(|| EmbeddingError::Unknown(name.to_string()))?,
    };
    let e = load(name, version)?;
    let configured = configured_dims()?;
    if configured != Some(e.dims as i32) {
        return Err(EmbeddingError::Dims { dims: e.dims as i32, configured }.into());
    }
    let n = activate_embedder(name, version)?;
    Ok(JsonB(json!({ "name": name, "version": version, "kind": e.kind_name(), "enqueued": n })))
}

/// The input hash of a row under an embedder: what `input_hash` holds once the row is embedded.
#[pg_extern(stable, parallel_safe)]
fn embedding_input_hash(
    name: Option<&str>,
    version: Option<i32>,
    strategy: Option<&str>,
    symbol: Option<&str>,
    features: Option<JsonbBytes>,
    series: Option<Vec<Option<f64>>>,
    rationale: Option<&str>,
    tags: Option<Vec<Option<String>>>,
) -> Result<Option<Vec<u8>>, ErrorReport> {
    // not STRICT (pgrx declares a function STRICT only when no argument is an Option): the
    // embedder must be named; the inputs may be NULL
    let name = name.ok_or(EmbeddingError::Null("name"))?;
    let version = version.ok_or(EmbeddingError::Null("version"))?;
    let e = load(name, version)?;
    let row = SignalInput {
        strategy: strategy.unwrap_or_default().to_string(),
        symbol: symbol.unwrap_or_default().to_string(),
        features: features.map(Features::Binary).unwrap_or_default(),
        series: series.map(|s| s.into_iter().flatten().collect()),
        rationale: rationale.map(String::from),
        tags: tags.unwrap_or_default().into_iter().flatten().collect(),
    };
    // NULL: this embedder cannot embed the row (a feature it reads is missing or not a number);
    // the refresh dead-letters such a row with the reason
    Ok(emb::input_hash(&e, &row).ok().map(|h| h.to_vec()))
}

// ------------------------------------------------------------------------------------------------
// pgvector datums built directly (no text round trip)
// ------------------------------------------------------------------------------------------------

pub struct VectorType {
    oid: pg_sys::Oid,
    array_oid: pg_sys::Oid,
    align: std::ffi::c_char,
    schema: String,
}

pub fn vector_type() -> VectorType {
    use crate::error::raise;
    // quantops requires vector (its control file), so it cannot be dropped while quantops exists
    let Some(schema) = vector_schema() else {
        raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "extension \"vector\" is not installed")
    };
    let row = Spi::connect(|c| -> Result<_, pgrx::spi::SpiError> {
        let t = c.select(
            "select t.oid, t.typarray, t.typalign::text from pg_catalog.pg_type t \
             join pg_catalog.pg_extension e on e.extnamespace = t.typnamespace \
             where e.extname = 'vector' and t.typname = 'vector'",
            None,
            &[],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((r.get::<pg_sys::Oid>(1)?, r.get::<pg_sys::Oid>(2)?, r.get::<String>(3)?)))
    })
    .unwrap_or_else(|e| crate::spi::failed("looking up the vector type", e).report_error());
    match row {
        Some((Some(oid), Some(array_oid), align)) => VectorType {
            oid,
            array_oid,
            align: align.as_deref().unwrap_or("i").as_bytes()[0] as std::ffi::c_char,
            schema,
        },
        _ => raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "type \"vector\" of extension \"vector\" does not exist"),
    }
}

/// A `vector[]` as PostgreSQL lays it out in memory, built in plain Rust (so a thread other than
/// the backend's may build it): the array header (no null bitmap), then each element, a
/// pgvector `vector` (4-byte varlena header, int16 dim, int16 unused, float4[dim]), padded to
/// the type's alignment. Little-endian, as every platform PostgreSQL and pgvector ship on here.
pub fn vector_array_bytes(elem_oid: u32, align: u8, vectors: &[Vec<f32>]) -> Vec<u8> {
    let pad = |n: usize| -> usize {
        let a = match align {
            b'c' => 1,
            b's' => 2,
            b'd' => 8,
            _ => 4,
        };
        n.div_ceil(a) * a
    };
    if vectors.is_empty() {
        // PostgreSQL's empty array: no dimensions at all
        let mut b = (16u32 << 2).to_le_bytes().to_vec();
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&elem_oid.to_le_bytes());
        return b;
    }
    const HEADER: usize = 24; // MAXALIGN(sizeof(ArrayType) + 2 * sizeof(int) * ndim), ndim = 1
    let total = HEADER + vectors.iter().map(|v| pad(8 + 4 * v.len())).sum::<usize>();
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&((total as u32) << 2).to_le_bytes()); // 4-byte varlena header
    b.extend_from_slice(&1i32.to_le_bytes()); // ndim
    b.extend_from_slice(&0i32.to_le_bytes()); // dataoffset: no null bitmap
    b.extend_from_slice(&elem_oid.to_le_bytes());
    b.extend_from_slice(&(vectors.len() as i32).to_le_bytes()); // dims[0]
    b.extend_from_slice(&1i32.to_le_bytes()); // lbound[0]
    b.resize(HEADER, 0);
    for v in vectors {
        let size = 8 + 4 * v.len();
        b.extend_from_slice(&((size as u32) << 2).to_le_bytes());
        b.extend_from_slice(&(v.len() as i16).to_le_bytes());
        b.extend_from_slice(&0i16.to_le_bytes());
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.resize(b.len() + pad(size) - size, 0);
    }
    debug_assert_eq!(b.len(), total);
    b
}

/// A `vector[]` argument for SPI, copied into the current memory context.
fn vector_array_datum<'a>(vt: &VectorType, bytes: &[u8]) -> DatumWithOid<'a> {
    unsafe {
        let p = pg_sys::palloc(bytes.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        DatumWithOid::new(pg_sys::Datum::from(p), vt.array_oid)
    }
}

impl VectorType {
    fn array_bytes(&self, vectors: &[Vec<f32>]) -> Vec<u8> {
        vector_array_bytes(self.oid.to_u32(), self.align as u8, vectors)
    }
}

// ------------------------------------------------------------------------------------------------
// One batch: pick, embed in parallel, write back, dequeue. Used by SQL and by the worker.
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
pub struct BatchOutcome {
    pub picked: i64,
    pub done: i64,
    pub unchanged: i64,
    pub failed: i64,
}

impl std::ops::AddAssign for BatchOutcome {
    fn add_assign(&mut self, b: BatchOutcome) {
        self.picked += b.picked;
        self.done += b.done;
        self.unchanged += b.unchanged;
        self.failed += b.failed;
    }
}

/// `features` read as its stored bytes (detoasted, copied): the embedding threads parse them.
impl FromDatum for JsonbBytes {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        unsafe {
            let v = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
            let size = pgrx::varsize(v);
            Some(JsonbBytes(std::slice::from_raw_parts(v as *const u8, size).to_vec()))
        }
    }
}

impl IntoDatum for JsonbBytes {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        unsafe {
            let p = pg_sys::palloc(self.0.len()) as *mut u8;
            std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, self.0.len());
            Some(pg_sys::Datum::from(p))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

pgrx::impl_sql_translatable!(JsonbBytes, arg_only = "jsonb");

unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbBytes {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }
}

/// A signal's inputs from six consecutive columns (strategy, symbol, features, series,
/// rationale, tags) of an SPI row, starting at `first`.
pub fn read_input(t: &pgrx::spi::SpiHeapTupleData, first: usize) -> SignalInput {
    SignalInput {
        strategy: t.get::<String>(first).ok().flatten().unwrap_or_default(),
        symbol: t.get::<String>(first + 1).ok().flatten().unwrap_or_default(),
        features: t.get::<JsonbBytes>(first + 2).ok().flatten().map(Features::Binary).unwrap_or_default(),
        series: t.get::<Vec<Option<f64>>>(first + 3).ok().flatten().map(|s| s.into_iter().flatten().collect()),
        rationale: t.get::<String>(first + 4).ok().flatten(),
        tags: t.get::<Vec<Option<String>>>(first + 5).ok().flatten().unwrap_or_default().into_iter().flatten().collect(),
    }
}

/// True while `e` is the active embedder, holding a share lock on its row until this transaction
/// ends: set_embedder() waits for batches in flight, and a batch never writes vectors of an
/// embedder that was switched away meanwhile (it would leave them dequeued and stale).
pub fn still_active(e: &Embedder) -> bool {
    Spi::connect_mut(|c| {
        c.update(
            "select true from quantops.embedders where name = $1 and version = $2 and active for share",
            None,
            &[e.name.as_str().into(), e.version.into()],
        )
        .map(|t| !t.is_empty())
        .unwrap_or(false)
    })
}

/// A picked queue row: the signal, its attempts so far, its inputs, the stored input hash, whether
/// another embedder made its vector (so it must be redone even with an equal hash), whether it
/// has a vector (to keep in the history).
pub struct Picked {
    id: i64,
    attempts: i32,
    input: SignalInput,
    stored: Option<Vec<u8>>,
    other_embedder: bool,
    has_embedding: bool,
}

/// What a batch writes, computed from its picked rows without touching the database, so that it
/// may run on another thread while the backend writes the previous batch.
#[derive(Default)]
pub struct Computed {
    picked: i64,
    unchanged: i64,
    ids: Vec<i64>,
    vectors: Vec<u8>,
    hashes: Vec<Vec<u8>>,
    had: Vec<i64>,
    dequeue: Vec<i64>,
    f_ids: Vec<i64>,
    f_hash: Vec<Option<Vec<u8>>>,
    f_err: Vec<String>,
    f_att: Vec<i32>,
}

/// Takes up to `batch_size` ready queue rows after `mark` (the queue position where the previous
/// batch of the same transaction ended, so a long refresh never rescans what it has taken), with
/// their signals; both locked with FOR UPDATE SKIP LOCKED, so concurrent callers never take the
/// same row. Nothing when `e` is no longer the active embedder.
pub fn pick(e: &Embedder, batch_size: i64, mark: &mut Option<(TimestampWithTimeZone, i64)>) -> Vec<Picked> {
    if !still_active(e) {
        return Vec::new();
    }
    let (mark_at, mark_id) = match mark {
        Some((t, i)) => (Some(*t), Some(*i)),
        None => (None, None),
    };
    let mut last: Option<(TimestampWithTimeZone, i64)> = None;
    let picked: Vec<Picked> = Spi::connect_mut(|c| {
        // the queue in order through its index, then the signals (signal before queue, as
        // writers of signals take them), so a batch never waits. Each signal is probed by id in
        // a LATERAL subquery that locks (so it is never flattened into a join): the planner,
        // left to choose with the queue's statistics stale, walked the primary key from its
        // start for every batch (merge join) or compared every pair (nested loop): quadratic.
        c.update(
            "with picked as ( \
               select q.signal_id, q.attempts, q.enqueued_at from quantops.embedding_queue q \
               where q.next_try_at <= pg_catalog.now() and (q.lease_until is null or q.lease_until < pg_catalog.now()) \
                 and ($4::timestamptz is null or (q.enqueued_at, q.signal_id) > ($4::timestamptz, $5::bigint)) \
               order by q.enqueued_at, q.signal_id limit $3 \
               for update of q skip locked) \
             select p.signal_id, p.attempts, p.enqueued_at, s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags, \
                    s.input_hash, s.other_embedder, s.has_embedding \
             from picked p cross join lateral ( \
               select s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags, s.input_hash, \
                      (s.embedder is distinct from $1 or s.embedder_version is distinct from $2::text) as other_embedder, \
                      s.embedding is not null as has_embedding \
               from quantops.signal_embeddings s where s.id = p.signal_id \
               for update of s skip locked) s",
            None,
            &[e.name.as_str().into(), e.version.into(), batch_size.into(), mark_at.into(), mark_id.into()],
        )
        .expect("reading the embedding queue failed")
        .map(|t| {
            let id = t.get::<i64>(1).ok().flatten().unwrap_or(0);
            if let Some(at) = t.get::<TimestampWithTimeZone>(3).ok().flatten() {
                if last.is_none_or(|l| (at, id) > l) {
                    last = Some((at, id));
                }
            }
            Picked {
                id,
                attempts: t.get::<i32>(2).ok().flatten().unwrap_or(0),
                input: read_input(&t, 4),
                stored: t.get::<Vec<u8>>(10).ok().flatten(),
                other_embedder: t.get::<bool>(11).ok().flatten().unwrap_or(true),
                has_embedding: t.get::<bool>(12).ok().flatten().unwrap_or(true),
            }
        })
        .collect()
    });
    if last.is_some() {
        *mark = last;
    }
    picked
}

/// Embeds picked rows (rayon) and lays out what to write. Pure Rust: safe on any thread.
pub fn compute(e: &Embedder, elem_oid: u32, align: u8, picked: Vec<Picked>) -> Computed {
    let meta: Vec<(i64, i32, bool)> = picked.iter().map(|p| (p.id, p.attempts, p.has_embedding)).collect();
    let rows: Vec<(SignalInput, Option<Vec<u8>>, bool)> = picked.into_iter().map(|p| (p.input, p.stored, p.other_embedder)).collect();
    let results: Vec<Embedded> = emb::embed_batch(e, &rows);
    let mut c = Computed { picked: meta.len() as i64, ..Default::default() };
    let mut vecs = Vec::new();
    for (&(id, attempts, has_embedding), r) in meta.iter().zip(results) {
        match (r.hash, r.vector) {
            (Ok(_), None) => {
                c.unchanged += 1;
                c.dequeue.push(id);
            }
            (Ok(h), Some(Ok(v))) => {
                if has_embedding {
                    c.had.push(id);
                }
                c.ids.push(id);
                vecs.push(v);
                c.hashes.push(h.to_vec());
                c.dequeue.push(id);
            }
            (h, Some(Err(err))) => {
                c.f_ids.push(id);
                c.f_hash.push(h.ok().map(|x| x.to_vec()));
                c.f_err.push(err.message().to_string());
                c.f_att.push(attempts + 1);
            }
            (Err(err), _) => {
                c.f_ids.push(id);
                c.f_hash.push(None);
                c.f_err.push(err.message().to_string());
                c.f_att.push(attempts + 1);
            }
        }
    }
    c.vectors = vector_array_bytes(elem_oid, align, &vecs);
    c
}

/// Writes a computed batch in the current transaction: vectors (keeping replaced ones in the
/// history), dead letters, dequeue.
pub fn apply(e: &Embedder, vt: &VectorType, c: Computed) -> BatchOutcome {
    let mut out = BatchOutcome { picked: c.picked, unchanged: c.unchanged, ..Default::default() };
    if !c.ids.is_empty() {
        write_vectors(e, vt, &c.ids, vector_array_datum(vt, &c.vectors), &c.hashes, Some(&c.had));
        out.done = c.ids.len() as i64;
    }
    if !c.f_ids.is_empty() {
        // built-in embedders are deterministic: a failure is permanent, dead-letter at once
        dead_letter(e, &c.f_ids, &c.f_hash, &c.f_err, &c.f_att, "permanent");
        out.failed = c.f_ids.len() as i64;
    }
    if !c.dequeue.is_empty() {
        run("dequeuing", "delete from quantops.embedding_queue where signal_id = any($1)", &[c.dequeue.into()]);
    }
    out
}

/// Writes embeddings, keeping each replaced one in the history.
pub fn write_embeddings(e: &Embedder, vt: &VectorType, ids: &[i64], vecs: &[Vec<f32>], hashes: &[Vec<u8>]) {
    write_vectors(e, vt, ids, vector_array_datum(vt, &vt.array_bytes(vecs)), hashes, None)
}

/// Writes a `vector[]` of embeddings for `ids`. `had`, when the caller read the rows under lock,
/// tells which rows had an embedding: only those have one to keep in the history, and a batch of
/// first embeddings skips that statement. Dead letters are cleared only when there are any.
fn write_vectors(e: &Embedder, vt: &VectorType, ids: &[i64], vectors: DatumWithOid<'_>, hashes: &[Vec<u8>], had: Option<&[i64]>) {
    let keep: &[i64] = had.unwrap_or(ids);
    if !keep.is_empty() {
        history(keep);
    }
    let sql = format!(
        "update quantops.signal_embeddings s set embedding = u.e, input_hash = u.h, embedder = $4, \
           embedder_version = $5, embedded_at = pg_catalog.now() \
         from rows from (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::{}.vector[]), pg_catalog.unnest($3::bytea[])) as u(id, e, h) where s.id = u.id",
        vt.schema
    );
    let failures: bool = Spi::get_one("select exists (select 1 from quantops.embedding_failures)").ok().flatten().unwrap_or(true);
    if failures {
        run("clearing old dead letters", "delete from quantops.embedding_failures where signal_id = any($1)", &[ids.to_vec().into()]);
    }
    run(
        "writing embeddings",
        &sql,
        &[ids.to_vec().into(), vectors, hashes.to_vec().into(), e.name.as_str().into(), e.version.to_string().into()],
    );
}

fn history(ids: &[i64]) {
    run(
        "keeping the previous embeddings",
        "insert into quantops.signal_embedding_history \
           (signal_id, owner, embedding, embedder, embedder_version, input_hash, valid_from, valid_to) \
         select s.id, s.owner, s.embedding, s.embedder, s.embedder_version, s.input_hash, \
                coalesce(s.embedded_at, s.created_at), pg_catalog.now() \
         from quantops.signal_embeddings s where s.id = any($1) and s.embedding is not null \
         on conflict do nothing",
        &[ids.to_vec().into()],
    );
}

/// Moves rows to the dead-letter table and out of the queue.
pub fn dead_letter(e: &Embedder, ids: &[i64], hashes: &[Option<Vec<u8>>], errors: &[String], attempts: &[i32], class: &str) {
    run(
        "dead-lettering",
        "insert into quantops.embedding_failures as f \
           (signal_id, embedder, embedder_version, input_hash, error_class, error, attempts, first_failed_at, last_tried_at) \
         select u.id, $5, $6, u.h, $7, u.err, u.att, pg_catalog.now(), pg_catalog.now() \
         from rows from (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::bytea[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::int[])) as u(id, h, err, att) \
         on conflict (signal_id) do update set embedder = excluded.embedder, embedder_version = excluded.embedder_version, \
           input_hash = excluded.input_hash, error_class = excluded.error_class, error = excluded.error, \
           attempts = excluded.attempts, last_tried_at = excluded.last_tried_at",
        &[
            ids.to_vec().into(),
            hashes.to_vec().into(),
            errors.to_vec().into(),
            attempts.to_vec().into(),
            e.name.as_str().into(),
            e.version.into(),
            class.into(),
        ],
    );
    run("dequeuing dead letters", "delete from quantops.embedding_queue where signal_id = any($1)", &[ids.to_vec().into()]);
}

/// Rows ready to embed now (not leased, not backing off).
/// Rows ready to be embedded now (count(*) returns one row).
pub fn ready_count() -> i64 {
    crate::spi::read_one(
        "select count(*) from quantops.embedding_queue \
         where next_try_at <= pg_catalog.now() and (lease_until is null or lease_until < pg_catalog.now())",
        &[],
    )
    .unwrap_or_else(|e| crate::spi::failed("counting the ready rows", e).report_error())
    .unwrap_or(0)
}

/// Rows queued (count(*) returns one row).
pub fn backlog() -> i64 {
    crate::spi::read_one("select count(*) from quantops.embedding_queue", &[])
        .unwrap_or_else(|e| crate::spi::failed("counting the queue", e).report_error())
        .unwrap_or(0)
}

pub fn builtin_active() -> Result<(Embedder, VectorType), EmbeddingError> {
    let e = active()?.ok_or(EmbeddingError::NoneActive)?;
    if !e.is_builtin() {
        return Err(EmbeddingError::HttpInSql(e.name.clone()));
    }
    Ok((e, vector_type()))
}

/// Recomputes stale embeddings with the active built-in embedder, within a row limit and a
/// time budget. Returns rows embedded, rows whose inputs had not changed (dequeued, no work),
/// rows dead-lettered, and the exact backlog left.
#[pg_extern]
fn refresh_embeddings(
    max_rows: default!(Option<i64>, "100000"),
    time_budget_ms: default!(Option<i64>, "10000"),
    batch_size: default!(Option<i64>, "2000"),
) -> Result<
    TableIterator<'static, (name!(done, i64), name!(unchanged, i64), name!(failed, i64), name!(remaining, i64))>,
    ErrorReport,
> {
    crate::spi::require_primary("refresh_embeddings")?;
    let started = Instant::now();
    let max_rows = max_rows.ok_or(EmbeddingError::Null("max_rows"))?;
    let budget = time_budget_ms.ok_or(EmbeddingError::Null("time_budget_ms"))?;
    let batch = batch_size.ok_or(EmbeddingError::Null("batch_size"))?;
    for (what, v, lo, hi) in [("max_rows", max_rows, 1, i64::MAX), ("time_budget_ms", budget, 1, 86_400_000), ("batch_size", batch, 1, 100_000)] {
        if v < lo || v > hi {
            return Err(EmbeddingError::Argument { what, why: format!("{v} is not between {lo} and {hi}") }.into());
        }
    }
    let (e, vt) = builtin_active()?;
    let total = drain(&e, &vt, max_rows, Duration::from_millis(budget as u64), batch);
    let remaining = backlog();
    audit::sql::record_call(
        "refresh_embeddings",
        json!({ "max_rows": max_rows, "time_budget_ms": budget, "batch_size": batch }),
        Some(json!({ "done": total.done, "unchanged": total.unchanged, "failed": total.failed, "remaining": remaining,
                     "embedder": e.name, "version": e.version })),
        started,
    );
    Ok(TableIterator::once((total.done, total.unchanged, total.failed, remaining)))
}

/// Runs batches, in this transaction, until the row limit, the time budget or an empty queue.
/// Pipelined: while the backend writes batch k, another thread embeds batch k+1 (picked and
/// locked just before), so the embedding costs no time of the backend's.
pub fn drain(e: &Embedder, vt: &VectorType, max_rows: i64, budget: Duration, batch: i64) -> BatchOutcome {
    let t0 = Instant::now();
    let mut total = BatchOutcome::default();
    let mut mark = None;
    let mut taken = 0i64;
    let mut pending: Option<std::thread::JoinHandle<Computed>> = None;
    loop {
        let next = if taken < max_rows && t0.elapsed() < budget { pick(e, batch.min(max_rows - taken), &mut mark) } else { Vec::new() };
        taken += next.len() as i64;
        let spawned = (!next.is_empty()).then(|| {
            // built here, on the backend's thread, so that a failure is an error with its SQLSTATE
            let pool = crate::threads::pipeline_pool()
                .unwrap_or_else(|err| crate::error::raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES, err));
            let (e2, oid, align) = (e.clone(), vt.oid.to_u32(), vt.align as u8);
            std::thread::Builder::new()
                .name("quantops-embed".into())
                .spawn(move || {
                    crate::threads::block_signals();
                    pool.install(|| compute(&e2, oid, align, next))
                })
                .unwrap_or_else(|err| {
                    crate::error::raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES, format!("could not start an embedding thread: {err}"))
                })
        });
        if let Some(h) = pending.take() {
            total += apply(e, vt, join(h));
        }
        match spawned {
            Some(h) => pending = Some(h),
            None => break,
        }
    }
    total
}

fn join(h: std::thread::JoinHandle<Computed>) -> Computed {
    // the embedding thread runs only quantops' pure code, which does not panic on any input: a
    // panic there is a bug, reported as PostgreSQL reports its own (XX000)
    h.join().unwrap_or_else(|_| crate::error::raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "quantops: the embedding thread panicked"))
}

/// Enqueues every stale row that is not queued: no embedding, another embedder, or an input hash
/// that no longer matches its inputs (a write with triggers off, logical replication). Rows
/// dead-lettered for the same input stay dead-lettered. Returns the rows enqueued.
#[pg_extern]
fn sweep_embeddings() -> Result<i64, ErrorReport> {
    crate::spi::require_primary("sweep_embeddings")?;
    let started = Instant::now();
    let e = active()?.ok_or(EmbeddingError::NoneActive)?;
    let n = sweep(&e);
    audit::sql::record_call("sweep_embeddings", json!({}), Some(json!({ "enqueued": n })), started);
    Ok(n)
}

pub fn sweep(e: &Embedder) -> i64 {
    let n: i64 = Spi::get_one_with_args(
        "with stale as ( \
           select s.id, quantops.embedding_input_hash($1, $2, s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags) h, \
                  s.input_hash, s.embedding is null or s.embedder is distinct from $1 \
                    or s.embedder_version is distinct from $2::text as other \
           from quantops.signal_embeddings s \
           where not exists (select 1 from quantops.embedding_queue q where q.signal_id = s.id)), \
         ins as (insert into quantops.embedding_queue (signal_id) \
           select st.id from stale st \
           where (st.other or st.input_hash is distinct from st.h) \
             and not exists (select 1 from quantops.embedding_failures f where f.signal_id = st.id \
                             and f.input_hash is not distinct from st.h and f.embedder = $1 and f.embedder_version = $2) \
           on conflict (signal_id) do nothing returning 1) \
         select count(*) from ins",
        &[e.name.as_str().into(), e.version.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    if n > 0 {
        crate::workers::wake_at_commit();
    }
    n
}

/// Puts dead-lettered rows back in the queue (all, or those of one embedder or error class).
#[pg_extern]
fn retry_failed(embedder: default!(Option<&str>, "NULL"), error_class: default!(Option<&str>, "NULL")) -> Result<i64, ErrorReport> {
    crate::spi::require_primary("retry_failed")?;
    let started = Instant::now();
    if let Some(c) = error_class {
        if c != "permanent" && c != "retries_exhausted" {
            return Err(EmbeddingError::Argument { what: "error_class", why: format!("\"{c}\" is not one of permanent, retries_exhausted") }.into());
        }
    }
    let n: i64 = Spi::get_one_with_args(
        "with f as (delete from quantops.embedding_failures \
                    where ($1::text is null or embedder = $1) and ($2::text is null or error_class = $2) returning signal_id), \
              ins as (insert into quantops.embedding_queue (signal_id) select signal_id from f \
                      on conflict (signal_id) do update set attempts = 0, next_try_at = '-infinity' returning 1) \
         select count(*) from ins",
        &[embedder.into(), error_class.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    audit::sql::record_call("retry_failed", json!({ "embedder": embedder, "error_class": error_class }), Some(json!({ "requeued": n })), started);
    if n > 0 {
        crate::workers::wake_at_commit();
    }
    Ok(n)
}

/// Registers a commit-time wake-up of the scheduler worker (called by the enqueue trigger).
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_worker() {
    crate::workers::wake_at_commit();
}


#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run("select quantops.configure(dims => 4)").unwrap();
        Spi::run(
            "select quantops.register_embedder('feat', 'features', 4, \
             '{\"features\": [\"a\", \"b\"], \"mean\": [0, 0], \"std\": [1, 1], \"seed\": 1}', activate => true)",
        )
        .unwrap();
        Spi::run(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, features, rationale) \
             select 'pgtest', 'S' || g, now(), jsonb_build_object('a', g, 'b', -g), 'r' from generate_series(1, 10) g",
        )
        .unwrap();
    }

    fn queued() -> i64 {
        Spi::get_one("select count(*) from quantops.embedding_queue").unwrap().unwrap()
    }

    fn refresh() -> (i64, i64, i64, i64) {
        let r: Option<Vec<Option<i64>>> =
            Spi::get_one("select array[done, unchanged, failed, remaining] from quantops.refresh_embeddings()").unwrap();
        let r: Vec<i64> = r.unwrap().into_iter().map(|x| x.unwrap()).collect();
        (r[0], r[1], r[2], r[3])
    }

    #[pg_test]
    fn jsonb_read_in_place_gives_postgres_own_numbers_and_the_text_paths_hash() {
        use super::super::core::{input_hash, Embedder, Features, SignalInput};
        use super::super::jsonb::{JsonbBytes, Value};
        let e = Embedder::parse("t", 1, "features", 3,
            &serde_json::json!({"features": ["a", "bb", "longer_key"], "mean": [0, 0, 0], "std": [1, 1, 1]})).unwrap();
        // every magnitude, sign and scale (short and long numeric formats), keys of mixed lengths
        let sql = "with x as (select g, round(((random() * 2 - 1) * 10 ^ (g % 41 - 20))::numeric, g % 25) x \
                                from generate_series(1, 3000) g) \
                   select jsonb_build_object('a', x, 'bb', -x * 0.0000001, 'longer_key', x * 1e20, 'z', 'str', 'n', null, \
                                             'o', jsonb_build_object('a', 1), 'arr', jsonb_build_array(1), 't', true) j, \
                          (jsonb_build_object('a', x, 'bb', -x * 0.0000001, 'longer_key', x * 1e20))::text, \
                          x::float8, (-x * 0.0000001)::float8, (x * 1e20)::float8 from x";
        let n = Spi::connect(|c| {
            let mut n = 0;
            for t in c.select(sql, None, &[]).unwrap() {
                let b: JsonbBytes = t.get(1).unwrap().unwrap();
                let text: String = t.get(2).unwrap().unwrap();
                let o = b.object().unwrap();
                for (k, col) in [("a", 3), ("bb", 4), ("longer_key", 5)] {
                    let want: f64 = t.get(col).unwrap().unwrap();
                    match o.get(k).unwrap() {
                        Some(Value::Number(x)) => assert_eq!(x.to_bits(), want.to_bits(), "{k} in {text}"),
                        other => panic!("{k}: {other:?}"),
                    }
                }
                assert_eq!(o.get("z").unwrap(), Some(Value::String));
                assert_eq!(o.get("n").unwrap(), Some(Value::Null));
                assert_eq!(o.get("o").unwrap(), Some(Value::Object));
                assert_eq!(o.get("arr").unwrap(), Some(Value::Array));
                assert_eq!(o.get("t").unwrap(), Some(Value::Bool));
                assert_eq!(o.get("absent").unwrap(), None);
                let row = |f| SignalInput { features: f, ..Default::default() };
                assert_eq!(input_hash(&e, &row(Features::Binary(b))), input_hash(&e, &row(Features::Text(text))));
                n += 1;
            }
            n
        });
        assert_eq!(n, 3000);
        let scalar: JsonbBytes = Spi::get_one("select '5'::jsonb").unwrap().unwrap();
        assert_eq!(scalar.object().err().as_deref(), Some("a scalar"));
        let array: JsonbBytes = Spi::get_one("select '[1, 2]'::jsonb").unwrap().unwrap();
        assert_eq!(array.object().err().as_deref(), Some("an array"));
    }

    #[pg_test]
    fn vector_arrays_built_in_rust_are_what_postgres_builds() {
        let vt = super::vector_type();
        let vecs = vec![vec![1.0f32, 2.0, 3.0], vec![4.5, -1.0, 0.0], vec![f32::MIN_POSITIVE]];
        let sql = format!(
            "select $1 = array['[1,2,3]', '[4.5,-1,0]', '[{:e}]']::{s}.vector[] and pg_catalog.array_length($1, 1) = 3 \
               and ($1)[2] = '[4.5,-1,0]'::{s}.vector",
            f32::MIN_POSITIVE,
            s = vt.schema
        );
        let same: Option<bool> = Spi::get_one_with_args(&sql, &[super::vector_array_datum(&vt, &vt.array_bytes(&vecs))]).unwrap();
        assert_eq!(same, Some(true));
        let empty: Option<bool> = Spi::get_one_with_args(
            &format!("select pg_catalog.cardinality($1) = 0 and $1 = '{{}}'::{}.vector[]", vt.schema),
            &[super::vector_array_datum(&vt, &vt.array_bytes(&[]))],
        )
        .unwrap();
        assert_eq!(empty, Some(true));
    }

    #[pg_test]
    fn a_pipelined_refresh_in_small_batches_embeds_every_row_once() {
        setup();
        Spi::run("insert into quantops.signal_embeddings (strategy, symbol, as_of, features) \
                  select 'pgtest', 'P' || g, now(), jsonb_build_object('a', g, 'b', 1) from generate_series(1, 25) g").unwrap();
        let r: Option<Vec<Option<i64>>> =
            Spi::get_one("select array[done, unchanged, failed, remaining] from quantops.refresh_embeddings(batch_size => 3)").unwrap();
        assert_eq!(r.unwrap(), vec![Some(35), Some(0), Some(0), Some(0)]);
        let wrong: Option<i64> = Spi::get_one(
            "select count(*) from quantops.signal_embeddings \
             where embedding is null or input_hash is distinct from quantops.embedding_input_hash('feat', 1, strategy, symbol, features, series, rationale, tags)",
        )
        .unwrap();
        assert_eq!(wrong, Some(0));
        // max_rows is honoured exactly, across batches
        Spi::run("update quantops.signal_embeddings set features = features || '{\"b\": 2}'").unwrap();
        let r: Option<Vec<Option<i64>>> =
            Spi::get_one("select array[done, remaining] from quantops.refresh_embeddings(max_rows => 7, batch_size => 3)").unwrap();
        assert_eq!(r.unwrap(), vec![Some(7), Some(28)]);
    }

    #[pg_test]
    fn new_rows_are_stale_and_refresh_embeds_them() {
        setup();
        assert_eq!(queued(), 10);
        let (done, unchanged, _, _) = refresh();
        assert_eq!((done, unchanged), (10, 0));
        assert_eq!(queued(), 0);
        let ok: Option<bool> = Spi::get_one(
            "select bool_and(embedding is not null and embedder = 'feat' and embedder_version = '1' \
             and input_hash = quantops.embedding_input_hash('feat', 1, strategy, symbol, features, series, rationale, tags)) \
             from quantops.signal_embeddings where strategy = 'pgtest'",
        )
        .unwrap();
        assert_eq!(ok, Some(true));
    }

    #[pg_test]
    fn unrelated_updates_cause_no_work() {
        setup();
        refresh();
        // the features embedder does not read rationale, tags or symbol... nor other features
        Spi::run("update quantops.signal_embeddings set rationale = 'changed', tags = '{x}' where strategy = 'pgtest'").unwrap();
        assert_eq!(queued(), 0);
        Spi::run("update quantops.signal_embeddings set features = features || '{\"unused\": 1}' where strategy = 'pgtest'").unwrap();
        // enqueued (features changed) but no embedding work: the input hash is the same
        assert_eq!(queued(), 10);
        let (done, unchanged, _, remaining) = refresh();
        assert_eq!((done, unchanged, remaining), (0, 10, 0));
        let hist: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embedding_history").unwrap();
        assert_eq!(hist, Some(0));
    }

    #[pg_test]
    fn many_updates_coalesce_into_one_unit_of_work() {
        setup();
        refresh();
        for i in 0..5 {
            Spi::run(&format!(
                "update quantops.signal_embeddings set features = jsonb_build_object('a', {i} + 100, 'b', 1) where symbol = 'S1'"
            ))
            .unwrap();
        }
        assert_eq!(queued(), 1);
        let (done, ..) = refresh();
        assert_eq!(done, 1);
        // the replaced embedding is kept for as-of reads
        let hist: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embedding_history").unwrap();
        assert_eq!(hist, Some(1));
    }

    #[pg_test]
    fn sweep_catches_writes_that_bypassed_the_trigger() {
        setup();
        refresh();
        Spi::run("set local session_replication_role = replica").unwrap();
        Spi::run("update quantops.signal_embeddings set features = jsonb_build_object('a', 7, 'b', 9) where symbol = 'S2'").unwrap();
        Spi::run("set local session_replication_role = origin").unwrap();
        assert_eq!(queued(), 0);
        let n: Option<i64> = Spi::get_one("select quantops.sweep_embeddings()").unwrap();
        assert_eq!(n, Some(1));
        let (done, ..) = refresh();
        assert_eq!(done, 1);
        assert_eq!(Spi::get_one::<i64>("select quantops.sweep_embeddings()").unwrap(), Some(0));
    }

    #[pg_test]
    fn bad_rows_are_dead_lettered_and_retry_failed_puts_them_back() {
        setup();
        Spi::run("update quantops.signal_embeddings set features = '{\"a\": 1}' where symbol = 'S3'").unwrap();
        let (done, _, failed, remaining) = refresh();
        assert_eq!((done, failed, remaining), (9, 1, 0));
        let err: Option<String> = Spi::get_one("select error from quantops.embedding_failures").unwrap();
        assert_eq!(err.as_deref(), Some("feature \"b\" is missing"));
        assert_eq!(Spi::get_one::<i64>("select quantops.retry_failed()").unwrap(), Some(1));
        assert_eq!(queued(), 1);
        // fixing the input clears the dead letter and embeds it
        Spi::run("update quantops.signal_embeddings set features = '{\"a\": 1, \"b\": 2}' where symbol = 'S3'").unwrap();
        let (done, _, failed, _) = refresh();
        assert_eq!((done, failed), (1, 0));
        assert_eq!(Spi::get_one::<i64>("select count(*) from quantops.embedding_failures").unwrap(), Some(0));
    }

    #[pg_test]
    fn a_new_embedder_version_marks_rows_stale_and_keeps_old_vectors() {
        setup();
        refresh();
        let r: Option<pgrx::JsonB> = Spi::get_one(
            "select quantops.set_embedder('feat', quantops.register_embedder('feat', 'features', 4, \
             '{\"features\": [\"a\", \"b\"], \"mean\": [1, 1], \"std\": [2, 2], \"seed\": 1}'))",
        )
        .unwrap();
        assert_eq!(r.unwrap().0["enqueued"], 10);
        // old vectors stay searchable until replaced
        let n: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embeddings where embedding is not null and embedder_version = '1'").unwrap();
        assert_eq!(n, Some(10));
        let (done, ..) = refresh();
        assert_eq!(done, 10);
        let v2: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embeddings where embedder_version = '2'").unwrap();
        assert_eq!(v2, Some(10));
        // the version-1 vectors are kept (as-of reads across transactions: tests/embedding.rs)
        let kept: Option<i64> = Spi::get_one("select count(*) from quantops.signal_embedding_history where embedder_version = '1'").unwrap();
        assert_eq!(kept, Some(10));
    }

    #[pg_test(error = "embedder \"feat\" version 1 cannot change")]
    fn embedder_versions_are_immutable() {
        setup();
        Spi::run("update quantops.embedders set params = '{}' where name = 'feat'").unwrap();
    }

    #[pg_test(error = "invalid embedder: feature \"a\" is named twice")]
    fn malformed_params_are_refused() {
        Spi::run("select quantops.configure(dims => 4)").unwrap();
        Spi::run(
            "select quantops.register_embedder('x', 'features', 4, '{\"features\": [\"a\", \"a\"], \"mean\": [0, 0], \"std\": [1, 1]}')",
        )
        .unwrap();
    }
}
