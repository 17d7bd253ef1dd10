//! The embedding refresh's storage: embedders (parsed once per backend), the queue, the
//! pgvector datums written without a text round trip, the pipelined batches of the built-in
//! refresh, dead letters, the sweep, and the jobs the registry runs. The SQL surface and the
//! worker both call it; it calls neither.

use super::batch::{compute, vector_array_bytes, BatchOutcome, Computed, Picked};
use super::core::{Embedder, Features, SignalInput};
use super::error::EmbeddingError;
use super::jsonb::JsonbBytes;
use crate::audit;
use crate::schedule::JobOutcome;
use crate::spi::{run, statement, vector_schema, ReportError, Sql};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

thread_local! {
    /// Embedder versions never change, so a backend may keep what it parsed.
    static CACHE: RefCell<HashMap<(String, i32), std::rc::Rc<Embedder>>> = RefCell::new(HashMap::new());
}

pub fn load(name: &str, version: i32) -> Result<Embedder, EmbeddingError> {
    load_shared(name, version).map(|e| (*e).clone())
}

/// The parsed embedder, shared with the cache: for what runs once per row (the input hash in
/// SQL), where a copy of the embedder cost more than the hash itself.
pub fn load_shared(name: &str, version: i32) -> Result<std::rc::Rc<Embedder>, EmbeddingError> {
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
    let e = std::rc::Rc::new(Embedder::parse(name, version, &kind, dims, &params.0).map_err(|e| EmbeddingError::Invalid(e.to_string()))?);
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

pub fn configured_dims() -> Result<Option<i32>, EmbeddingError> {
    Ok(crate::spi::read_one("select embedding_dims from quantops.settings", &[])?)
}

pub fn activate_embedder(name: &str, version: i32) -> Result<i64, EmbeddingError> {
    let started = Instant::now();
    load(name, version)?;
    run(
        "deactivating embedders",
        "update quantops.embedders set active = false where active and (name, version) <> ($1, $2)",
        &[name.into(), version.into()],
    );
    run(
        "activating the embedder",
        "update quantops.embedders set active = true where name = $1 and version = $2",
        &[name.into(), version.into()],
    );
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
    audit::store::record_call("set_embedder", json!({ "name": name, "version": version }), Some(json!({ "enqueued": n })), started);
    crate::runtime::wake_at_commit();
    Ok(n)
}

#[derive(Clone)]
pub struct VectorType {
    pub oid: pg_sys::Oid,
    pub array_oid: pg_sys::Oid,
    pub align: std::ffi::c_char,
    pub schema: Sql,
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
        Some((Some(oid), Some(array_oid), align)) => {
            VectorType { oid, array_oid, align: align.as_deref().unwrap_or("i").as_bytes()[0] as std::ffi::c_char, schema }
        }
        _ => raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "type \"vector\" of extension \"vector\" does not exist"),
    }
}

/// A `vector[]` argument for SPI, copied into the current memory context.
pub fn vector_array_datum<'a>(vt: &VectorType, bytes: &[u8]) -> DatumWithOid<'a> {
    // SAFETY: palloc returns `bytes.len()` writable bytes in the current memory context; the copy
    // fills them, and the datum points at them for as long as that context lives (the statement)
    unsafe {
        let p = pg_sys::palloc(bytes.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        DatumWithOid::new(pg_sys::Datum::from(p), vt.array_oid)
    }
}

impl VectorType {
    pub fn array_bytes(&self, vectors: &[Vec<f32>]) -> Vec<u8> {
        vector_array_bytes(self.oid.to_u32(), self.align as u8, vectors)
    }
}

/// `features` read as its stored bytes (detoasted, copied): the embedding threads parse them.
impl FromDatum for JsonbBytes {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null jsonb datum (checked above); detoasting yields a whole varlena of
        // varsize bytes, copied out before anything can free it
        unsafe {
            let v = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
            let size = pgrx::varsize(v);
            Some(JsonbBytes(std::slice::from_raw_parts(v as *const u8, size).to_vec()))
        }
    }
}

impl IntoDatum for JsonbBytes {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // SAFETY: palloc returns len writable bytes in the current memory context, filled by the copy
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

// SAFETY: unbox_arg_unchecked reads the argument only through FromDatum above, which checks
// for NULL and copies what it reads
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbBytes {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: pgrx calls this with an argument of this call, declared jsonb
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
        crate::spi::kept(
            c,
            "select true from quantops.embedders where name = $1 and version = $2 and active for share",
            &[e.name.as_str().into(), e.version.into()],
        )
        .map(|t| !t.is_empty())
        .unwrap_or(false)
    })
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
        .unwrap_or_else(|err| crate::spi::failed("reading the embedding queue", err).report_error())
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

/// Writes a computed batch in the current transaction: vectors (keeping replaced ones in the
/// history), dead letters, dequeue.
pub fn apply(e: &Embedder, vt: &VectorType, c: Computed) -> BatchOutcome {
    let mut out = BatchOutcome { picked: c.picked, unchanged: c.unchanged, ..Default::default() };
    if !c.ids.is_empty() {
        write_vectors(e, vt, &c.ids, vector_array_datum(vt, &c.vectors), &c.hashes, &c.had);
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

/// Writes embeddings, keeping the replaced ones of the rows in `had` (read under lock: the rows
/// that have an embedding now) in the history.
pub fn write_embeddings(e: &Embedder, vt: &VectorType, ids: &[i64], vecs: &[Vec<f32>], hashes: &[Vec<u8>], had: &[i64]) {
    write_vectors(e, vt, ids, vector_array_datum(vt, &vt.array_bytes(vecs)), hashes, had)
}

/// Writes a `vector[]` of embeddings for `ids`. `had`, read under lock by the caller, tells which
/// rows had an embedding: only those have one to keep in the history, and a batch of first
/// embeddings skips that statement. Dead letters are cleared only when there are any.
fn write_vectors(e: &Embedder, vt: &VectorType, ids: &[i64], vectors: DatumWithOid<'_>, hashes: &[Vec<u8>], had: &[i64]) {
    if !had.is_empty() {
        history(had);
    }
    let sql = statement(
        "update quantops.signal_embeddings s set embedding = u.e, input_hash = u.h, embedder = $4, \
           embedder_version = $5, embedded_at = pg_catalog.now() \
         from rows from (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::{}.vector[]), pg_catalog.unnest($3::bytea[])) as u(id, e, h) where s.id = u.id",
        &[&vt.schema],
    );
    clear_dead_letters(ids);
    run(
        "writing embeddings",
        &sql,
        &[ids.to_vec().into(), vectors, hashes.to_vec().into(), e.name.as_str().into(), e.version.to_string().into()],
    );
}

/// Clears the dead letters of rows just embedded (only when there are any dead letters at all).
pub fn clear_dead_letters(ids: &[i64]) {
    let failures: bool = Spi::connect_mut(|c| {
        crate::spi::kept(c, "select exists (select 1 from quantops.embedding_failures)", &[])?.first().get_one::<bool>()
    })
    .ok()
    .flatten()
    .unwrap_or(true);
    if failures {
        run("clearing old dead letters", "delete from quantops.embedding_failures where signal_id = any($1)", &[ids.to_vec().into()]);
    }
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
        return Err(EmbeddingError::WorkerOnly { name: e.name.clone(), kind: e.kind_name() });
    }
    Ok((e, vector_type()))
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
                    crate::error::raise(
                        PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
                        format!("could not start an embedding thread: {err}"),
                    )
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
        crate::runtime::wake_at_commit();
    }
    n
}

/// Puts dead-lettered rows back in the queue (all, or those of one embedder or error class);
/// returns how many.
pub fn requeue_failed(embedder: Option<&str>, error_class: Option<&str>) -> i64 {
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
    if n > 0 {
        crate::runtime::wake_at_commit();
    }
    n
}

/// The `refresh-embeddings` job from SQL (`run_job`): a bounded drain with the built-in embedder.
pub fn refresh_job() -> Result<JobOutcome, String> {
    let (e, vt) = builtin_active().map_err(|e| e.to_string())?;
    let b = drain(&e, &vt, 100_000, Duration::from_secs(60), 2000);
    Ok(JobOutcome {
        rows: b.done,
        details: json!({ "embedder": e.name, "version": e.version, "done": b.done,
                         "unchanged": b.unchanged, "failed": b.failed }),
    })
}

/// The `sweep-embeddings` job.
pub fn sweep_job() -> Result<JobOutcome, String> {
    match active().map_err(|e| e.to_string())? {
        Some(e) => Ok(JobOutcome { rows: sweep(&e), details: json!({ "embedder": e.name }) }),
        None => Ok(JobOutcome { rows: 0, details: json!({ "embedder": null }) }),
    }
}
