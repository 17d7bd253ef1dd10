//! The worker's side of the embedding refresh: drain the queue in short transactions. Built-in
//! embedders run a batch per transaction; the HTTP provider is called between transactions:
//! lease (commit), call, write back only where the input is still the one leased.

use super::batch::BatchOutcome;
use super::core::{self as emb, Embedder, Kind, RowError};
use super::http::{embed_split, Provider};
use super::store;
use crate::xact::in_transaction;
use crate::{gucs, jobs};
use pgrx::prelude::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// How long one drain may run before the worker looks at its other duties again.
const DRAIN_BUDGET: Duration = Duration::from_secs(20);

thread_local! {
    /// after a failed drain, wait before the next one instead of failing every naptime; a pause
    /// applies to the embedder that failed (name, version), not to one activated since
    static PAUSED: std::cell::RefCell<Option<(Instant, Option<(String, i32)>)>> = const { std::cell::RefCell::new(None) };
}

fn paused(who: Option<(&str, i32)>) -> bool {
    PAUSED.with(|p| {
        matches!(&*p.borrow(), Some((until, e)) if Instant::now() < *until
            && (e.is_none() || e.as_ref().map(|(n, v)| (n.as_str(), *v)) == who))
    })
}

fn pause(who: Option<(&str, i32)>) {
    PAUSED.with(|p| *p.borrow_mut() = Some((Instant::now() + Duration::from_secs(30), who.map(|(n, v)| (n.to_string(), v)))));
}

/// The scheduler's pass (the registry's `each_pass`): drains the queue, unless the active
/// embedder is the local model, which only the embedder worker runs.
pub fn each_pass() {
    drain(false);
}

/// Drains ready work, recording the run in job_runs when there was any. Returns rows handled.
/// `model`: the embedder worker's drain (the local model only); else the scheduler's (any other
/// embedder).
pub fn drain(model: bool) -> i64 {
    if paused(None) {
        return 0;
    }
    // an error here is logged once a pause, never mistaken for "nothing to do"
    let stop = |what: &str, m: String| {
        warning!("quantops: the embedding refresh {what}: {m}");
        pause(None);
        0
    };
    let e = match in_transaction(store::active) {
        Ok(Ok(Some(e))) => e,
        Ok(Ok(None)) => return 0,
        Ok(Err(err)) => return stop("cannot use the active embedder", err.to_string()),
        Err(m) => return stop("could not read the active embedder", m),
    };
    if paused(Some((&e.name, e.version))) || model != matches!(e.kind, Kind::Model(_)) {
        return 0;
    }
    let ready = match in_transaction(store::ready_count) {
        Ok(n) => n,
        Err(m) => return stop("could not read the queue", m),
    };
    if ready == 0 {
        return 0;
    }
    let run_id = match in_transaction(|| jobs::store::begin_run("refresh-embeddings", if model { "embedder worker" } else { "worker" })) {
        Ok(id) => id,
        Err(m) => return stop("could not record its start", m),
    };
    let t0 = Instant::now();
    let mut total = BatchOutcome::default();
    let mut error = None;
    while t0.elapsed() < DRAIN_BUDGET && !crate::runtime::stopping() {
        crate::runtime::reload_if_asked();
        let step = if e.is_builtin() {
            let e2 = e.clone();
            // up to 5 batches of 2,000 a transaction, pipelined (embed the next while writing one)
            in_transaction(move || {
                let vt = store::vector_type();
                store::drain(&e2, &vt, 10_000, Duration::from_secs(5), 2000)
            })
        } else {
            pipeline(&e, t0 + DRAIN_BUDGET)
        };
        match step {
            Ok(b) => {
                total += b;
                if b.picked == 0 {
                    break;
                }
            }
            Err(m) => {
                error = Some(m);
                break;
            }
        }
    }
    let result = match error {
        None => Ok(crate::schedule::JobOutcome {
            rows: total.done,
            details: json!({ "embedder": e.name, "version": e.version, "done": total.done,
                             "unchanged": total.unchanged, "failed": total.failed,
                             "peak_in_flight": total.peak_in_flight, "last_throttle_ms": total.last_throttle_ms,
                             "requests": total.requests, "lease_ms": total.lease_us / 1000, "write_ms": total.write_us / 1000 }),
        }),
        Some(m) => {
            pause(Some((&e.name, e.version)));
            Err(m)
        }
    };
    if let Err(m) = in_transaction(move || jobs::store::finish_run(run_id, &result)) {
        warning!("quantops: could not record the end of the embedding refresh run {run_id}: {m}");
    }
    total.picked
}

/// The provider's API key: the Vault secret the embedder names (only a `quantops_` one, only from
/// the Vault extension's own view), else the superuser's key file, else none. A named secret that
/// cannot be read is an error: the key file's key is never sent in its place.
fn api_key(secret: &Option<String>) -> Result<Option<String>, String> {
    if let Some(name) = secret {
        super::egress::check_secret_name(name).map_err(|e| e.to_string())?;
        let name = name.clone();
        let from_vault = in_transaction(move || -> Result<Option<String>, pgrx::spi::SpiError> {
            // the view must be the Vault extension's own: a relation of that name that someone
            // else created (where Vault is absent) would run its code as this superuser process
            let genuine: bool = crate::spi::read_one(
                "select exists (select 1 from pg_catalog.pg_depend d join pg_catalog.pg_extension e on e.oid operator(pg_catalog.=) d.refobjid \
                  where d.classid operator(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
                    and d.objid operator(pg_catalog.=) pg_catalog.to_regclass('vault.decrypted_secrets') \
                    and d.refclassid operator(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass \
                    and d.deptype operator(pg_catalog.=) 'e' and e.extname operator(pg_catalog.=) 'supabase_vault'::pg_catalog.name)",
                &[],
            )?
            .unwrap_or(false);
            if !genuine {
                return Ok(None);
            }
            crate::spi::read_one::<String>(
                "select s.decrypted_secret from vault.decrypted_secrets s where s.name operator(pg_catalog.=) $1",
                &[name.as_str().into()],
            )
        });
        return match from_vault {
            Ok(Ok(Some(k))) => Ok(Some(k)),
            Ok(Ok(None)) => Err(format!(
                "vault secret \"{name}\" not found (or Supabase Vault is not installed)",
                name = secret.as_deref().unwrap_or("")
            )),
            Ok(Err(err)) => Err(format!("reading the vault secret failed: {err}")),
            Err(m) => Err(format!("reading the vault secret failed: {m}")),
        };
    }
    let Some(path) = gucs::embedding_api_key_file() else { return Ok(None) };
    match std::fs::read_to_string(&path) {
        Ok(k) => Ok(Some(k.trim().to_string()).filter(|k| !k.is_empty())),
        Err(err) => Err(format!("cannot read quantops.embedding_api_key_file \"{path}\": {}", err.kind())),
    }
}

/// The HTTP path: up to `concurrency` requests in flight, each from a thread of its own (which
/// never touches PostgreSQL) with a batch leased for it in a short committed transaction; the
/// main thread leases the next batch while earlier ones are out, and writes each answer in its
/// own short transaction as it arrives (compare-and-set on the leased input hash), which also
/// leases the batch that goes out next. No network
/// call is ever made inside an open transaction. A throttled answer (429, Retry-After) slows the
/// whole embedder down ([`emb::Aimd`]), not only its rows. The main thread waits on its latch, so
/// a SIGTERM stops the worker within moments even with slow requests out: their leases are given
/// back and the rows stay queued. Runs until nothing is ready, the deadline, or a stop.
///
/// The local model (kind `model`, in the embedder worker) takes the same path: a batch leased,
/// embedded on the model's threads while the next is leased, written back with the same
/// compare-and-set; two batches in flight keep its threads busy.
fn pipeline(e: &Embedder, deadline: Instant) -> Result<BatchOutcome, String> {
    let p = match &e.kind {
        Kind::Http(p) => Shape {
            lease_s: (p.timeout_ms as f64 / 1000.0) * 2.0 + 5.0,
            concurrency: p.concurrency,
            batch_size: p.batch_size,
            max_attempts: p.max_attempts,
            timeout_ms: p.timeout_ms,
        },
        Kind::Model(m) => {
            Shape { lease_s: 300.0, concurrency: 2, batch_size: m.batch_size, max_attempts: m.max_attempts, timeout_ms: 120_000 }
        }
        _ => return Err(format!("embedder \"{}\" is embedded in the backend, not by a worker", e.name)),
    };
    // pgvector's type, looked up once a pass (it cannot be dropped while quantops exists)
    let vt = match in_transaction(store::vector_type) {
        Ok(vt) => vt,
        Err(m) => return Err(format!("looking up pgvector's type failed: {m}")),
    };
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lease_s = p.lease_s;
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Vec<Result<Vec<f32>, RowError>>)>();
    let mut flight: std::collections::HashMap<u64, Vec<Leased>> = std::collections::HashMap::new();
    let mut next_id = 0u64;
    let mut ctl = emb::Aimd::new(p.concurrency);
    let mut out = BatchOutcome::default();
    let mut drained = false;
    let mut peak = 0usize;
    // every way out gives back what is still leased; short of a stop it first waits for the
    // requests still out (each ends by its timeout), so the provider never sees more than
    // `concurrency` requests of this embedder, even across an error and the next pass
    let wait_ms = p.timeout_ms + 1000;
    let give_back = |flight: &mut std::collections::HashMap<u64, Vec<Leased>>| {
        // the model stops between its batches
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        let until = Instant::now() + Duration::from_millis(wait_ms);
        let mut out = flight.len();
        while out > 0 && !crate::runtime::stopping() && Instant::now() < until {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(_) => out -= 1,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => crate::runtime::reload_if_asked(),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for (_, leased) in flight.drain() {
            release(&leased);
        }
        crate::runtime::publish_http(0, 0, None);
    };
    // a leased batch goes out on a thread of its own (fresh rows in one request, split on a
    // permanent error; earlier failures one by one); false: there was nothing to lease
    let launch = |leased: Vec<Leased>,
                  pr: Target,
                  flight: &mut std::collections::HashMap<u64, Vec<Leased>>,
                  next_id: &mut u64,
                  out: &mut BatchOutcome|
     -> Result<bool, String> {
        out.picked += leased.len() as i64;
        if leased.is_empty() {
            return Ok(false);
        }
        let jobs: Vec<(String, bool)> = leased.iter().map(|l| (l.text.clone(), l.retry)).collect();
        let (id, txc, dims, stop) = (*next_id, tx.clone(), e.dims, cancel.clone());
        *next_id += 1;
        let spawned = std::thread::Builder::new().name("quantops-embed".into()).spawn(move || {
            crate::threads::block_signals();
            let _ = txc.send((id, call(&pr, &jobs, dims, &stop)));
        });
        if let Err(err) = spawned {
            release(&leased);
            return Err(format!("starting a provider thread failed: {err}"));
        }
        out.requests += 1;
        flight.insert(id, leased);
        Ok(true)
    };
    let n = p.batch_size as i64;
    loop {
        if crate::runtime::stopping() {
            give_back(&mut flight);
            return Err("stopped (SIGTERM) while the provider was answering; the leased rows are queued again".into());
        }
        // 1. keep `limit` requests in flight
        while !drained && flight.len() < ctl.limit() && ctl.may_send(Instant::now()) && Instant::now() < deadline {
            // a reload (a smaller allowlist, say) takes effect before the next request
            crate::runtime::reload_if_asked();
            let provider_now = match target(e) {
                Ok(pr) => pr,
                Err(m) => {
                    give_back(&mut flight);
                    return Err(m);
                }
            };
            let e1 = e.clone();
            let t_lease = Instant::now();
            let leased_now = in_transaction(move || lease_batch(&e1, n, lease_s));
            out.lease_us += t_lease.elapsed().as_micros() as i64;
            let leased: Vec<Leased> = match leased_now {
                Ok(Ok(l)) => l,
                Ok(Err(m)) | Err(m) => {
                    give_back(&mut flight);
                    return Err(m);
                }
            };
            match launch(leased, provider_now, &mut flight, &mut next_id, &mut out) {
                Ok(true) => {}
                Ok(false) => {
                    drained = true;
                    break;
                }
                Err(m) => {
                    give_back(&mut flight);
                    return Err(m);
                }
            }
            peak = peak.max(flight.len());
            crate::runtime::publish_http(flight.len(), ctl.limit(), ctl.last_wait_ms());
        }
        if flight.is_empty() {
            if drained || Instant::now() >= deadline {
                break;
            }
            // held by a rate-limit wait: sleep until it ends (or a stop)
            wait_latch(5);
            serve_asks();
            continue;
        }
        // 2. write each answer as it arrives
        let answer = match rx.try_recv() {
            Ok(a) => Some(a),
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                // the latch (a stop, a reload, an embed_text ask) is looked at without waiting;
                // an answer then ends the wait at once, anything else within 5 ms
                wait_latch(0);
                serve_asks();
                match rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(a) => Some(a),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    // cannot happen: this function holds a sender
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        give_back(&mut flight);
                        return Err("the provider threads ended without an answer".into());
                    }
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                give_back(&mut flight);
                return Err("the provider threads ended without an answer".into());
            }
        };
        let Some((id, results)) = answer else { continue };
        let Some(leased) = flight.remove(&id) else { continue };
        match emb::throttle_wait(&results) {
            Some(wait) => ctl.on_throttle(Instant::now(), wait),
            None if results.iter().all(|r| r.is_ok()) => ctl.on_success(),
            None => {}
        }
        crate::runtime::publish_http(flight.len(), ctl.limit(), ctl.last_wait_ms());
        // the next batch is leased in the write-back's transaction when one may go out now (one
        // transaction a batch instead of two); rows may have been enqueued meanwhile, so a
        // drained queue is looked at again. A provider that may not be called now (the
        // allowlist shrank, its key is gone) only skips that lease: the answer in hand is
        // written, and the next round's own lease reports the error.
        let provider_next = if flight.len() < ctl.limit() && ctl.may_send(Instant::now()) && Instant::now() < deadline {
            crate::runtime::reload_if_asked();
            target(e).ok()
        } else {
            None
        };
        let lease_next = provider_next.is_some();
        let (e2, vt2, max_attempts) = (e.clone(), vt.clone(), p.max_attempts);
        let t_write = Instant::now();
        let written = in_transaction(move || -> Result<((i64, i64), Option<(Vec<Leased>, i64)>), String> {
            let w = write_back(&e2, &vt2, &leased, results, max_attempts)?;
            if !lease_next {
                return Ok((w, None));
            }
            let t_lease = Instant::now();
            let l = lease_batch(&e2, n, lease_s)?;
            Ok((w, Some((l, t_lease.elapsed().as_micros() as i64))))
        });
        let spent = t_write.elapsed().as_micros() as i64;
        drained = false;
        match written {
            Ok(Ok(((done, failed), next))) => {
                out.done += done;
                out.failed += failed;
                let leased_us = next.as_ref().map_or(0, |(_, us)| *us);
                out.write_us += spent - leased_us;
                out.lease_us += leased_us;
                if let (Some((leased, _)), Some(pr)) = (next, provider_next) {
                    match launch(leased, pr, &mut flight, &mut next_id, &mut out) {
                        Ok(true) => {}
                        Ok(false) => drained = true,
                        Err(m) => {
                            give_back(&mut flight);
                            return Err(m);
                        }
                    }
                    peak = peak.max(flight.len());
                    crate::runtime::publish_http(flight.len(), ctl.limit(), ctl.last_wait_ms());
                }
            }
            Ok(Err(m)) | Err(m) => {
                give_back(&mut flight);
                return Err(m);
            }
        }
    }
    crate::runtime::publish_http(0, ctl.limit(), ctl.last_wait_ms());
    out.peak_in_flight = peak as i64;
    out.last_throttle_ms = ctl.last_wait_ms().map(|w| w as i64);
    Ok(out)
}

/// What one embedder's pipeline needs to know of it.
struct Shape {
    lease_s: f64,
    concurrency: usize,
    batch_size: usize,
    max_attempts: i32,
    timeout_ms: u64,
}

/// Where a leased batch goes: the HTTP provider, or the local model this worker holds.
enum Target {
    Http(Provider),
    Model(std::sync::Arc<super::model::Model>, &'static rayon::ThreadPool),
}

fn target(e: &Embedder) -> Result<Target, String> {
    match &e.kind {
        Kind::Http(p) => request_target(e, p).map(Target::Http),
        Kind::Model(m) => {
            let (model, pool) = super::local::loaded(&m.model)?;
            Ok(Target::Model(model, pool))
        }
        _ => Err(format!("embedder \"{}\" is embedded in the backend, not by a worker", e.name)),
    }
}

/// Embeds a leased batch (off the main thread: no PostgreSQL here).
fn call(t: &Target, jobs: &[(String, bool)], dims: usize, cancel: &std::sync::atomic::AtomicBool) -> Vec<Result<Vec<f32>, RowError>> {
    match t {
        Target::Http(p) => call_provider(p, jobs),
        Target::Model(m, pool) => {
            let texts: Vec<&str> = jobs.iter().map(|(t, _)| t.as_str()).collect();
            match m.embed(&texts, pool, cancel) {
                Ok(vecs) => vecs.into_iter().map(|v| emb::check_model_vector(v, dims)).collect(),
                Err(msg) => jobs.iter().map(|_| Err(RowError::Retryable { msg: msg.clone(), retry_after_ms: None })).collect(),
            }
        }
    }
}

/// The provider to call now: the allowlist is read before every request (a superuser may shrink
/// it with a reload), and before any key is read, so a host that is not allowed gets nothing.
fn request_target(e: &Embedder, p: &emb::HttpParams) -> Result<Provider, String> {
    let allowlist = gucs::embedding_allowed_hosts();
    if let Err(err) = super::egress::check(&p.url, &allowlist, false) {
        return Err(format!("embedder \"{}\" was not called: {err}", e.name));
    }
    let api_key = api_key(&p.api_key_secret).map_err(|m| format!("embedder \"{}\" was not called: {m}", e.name))?;
    if let Err(err) = super::egress::check(&p.url, &allowlist, api_key.is_some()) {
        return Err(format!("embedder \"{}\" was not called: {err}", e.name));
    }
    Ok(Provider {
        url: p.url.clone(),
        model: p.model.clone(),
        dims: e.dims,
        send_dimensions: p.send_dimensions,
        timeout: Duration::from_millis(p.timeout_ms),
        api_key,
    })
}

/// In the embedder worker, answers embed_text while a drain waits for its batches.
fn serve_asks() {
    if super::local::is_embedder_worker() {
        super::ask::serve();
    }
}

/// Waits on the worker's latch for at most `ms` milliseconds.
fn wait_latch(ms: i64) {
    // SAFETY: the worker's main thread; WL_EXIT_ON_PM_DEATH ends the process if the postmaster
    // dies. A wake-up meant for the main loop only shortens this wait.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

/// The provider's answer for every leased row, in order: fresh rows in one request (split on a
/// permanent error), rows that failed before one request each.
fn call_provider(provider: &Provider, jobs: &[(String, bool)]) -> Vec<Result<Vec<f32>, RowError>> {
    let fresh: Vec<String> = jobs.iter().filter(|(_, retry)| !retry).map(|(t, _)| t.clone()).collect();
    let mut fresh_results = embed_split(provider, &fresh).into_iter();
    jobs.iter()
        .map(|(text, retry)| {
            let r = if *retry { embed_split(provider, std::slice::from_ref(text)).pop() } else { fresh_results.next() };
            // embed_split answers once per input
            r.unwrap_or_else(|| Err(RowError::Retryable { msg: "no answer for this input".into(), retry_after_ms: None }))
        })
        .collect()
}

/// Writes the vectors of rows that had no embedding when leased, in one statement: the
/// compare-and-set (the row's input still hashes to the leased hash, the row still leased by this
/// backend and still without an embedding), the write and the dequeue. A row edited meanwhile is
/// re-checked on its newest version by the UPDATE (READ COMMITTED) and left out. Returns the rows
/// written and the rows left out (stale). The lease is looked up per row through the queue's key
/// (a subquery the planner cannot turn into a join): as a join, planned from the queue's stale
/// statistics, it scanned the whole queue for every batch.
fn write_first(
    e: &Embedder,
    vt: &store::VectorType,
    ids: Vec<i64>,
    vecs: &[Vec<f32>],
    hashes: Vec<Vec<u8>>,
) -> Result<(i64, Vec<i64>), String> {
    // a kept plan (the types come with the arguments: $2 is pgvector's vector[], wherever it lives)
    let sql = "with u as (select * from rows from (pg_catalog.unnest($1), pg_catalog.unnest($2), \
                      pg_catalog.unnest($3)) as u(id, e, h)), \
              w as (update quantops.signal_embeddings s set embedding = u.e, input_hash = u.h, embedder = $4, \
                      embedder_version = $5, embedded_at = pg_catalog.now() \
                    from u \
                    where s.id = u.id and s.embedding is null \
                      and (select q.leased_by from quantops.embedding_queue q where q.signal_id = s.id) = pg_catalog.pg_backend_pid() \
                      and quantops.embedding_input_hash($4, $6, s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags) = u.h \
                    returning s.id), \
              d as (delete from quantops.embedding_queue q using w where q.signal_id = w.id) \
         select id from w";
    let vectors = store::vector_array_datum(vt, &vt.array_bytes(vecs));
    let written: Vec<i64> = Spi::connect_mut(|c| {
        let t = crate::spi::kept(
            c,
            sql,
            &[ids.clone().into(), vectors, hashes.into(), e.name.as_str().into(), e.version.to_string().into(), e.version.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(t.filter_map(|t| t.get::<i64>(1).ok().flatten()).collect())
    })
    .map_err(|err| format!("writing embeddings failed: {err}"))?;
    if !written.is_empty() {
        store::clear_dead_letters(&written);
    }
    let keep: std::collections::HashSet<i64> = written.iter().copied().collect();
    let stale = ids.into_iter().filter(|id| !keep.contains(id)).collect();
    Ok((written.len() as i64, stale))
}

/// Writes the vectors of rows that had an embedding when leased: only rows whose input is still
/// the one leased and still leased by this backend, read under lock, the embeddings they replace
/// kept in the history. Returns the rows written and the rows left out (stale).
fn write_replacing(
    e: &Embedder,
    vt: &store::VectorType,
    ids: Vec<i64>,
    vecs: Vec<Vec<f32>>,
    hashes: Vec<Vec<u8>>,
) -> Result<(i64, Vec<i64>), String> {
    let still: Vec<(i64, bool)> = Spi::connect_mut(|c| {
        let t = c.update(
            "select s.id, s.embedding is not null from quantops.signal_embeddings s \
             join rows from (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::bytea[])) u(id, h) on s.id = u.id \
             where (select q.leased_by from quantops.embedding_queue q where q.signal_id = s.id) = pg_catalog.pg_backend_pid() \
               and quantops.embedding_input_hash($3, $4, s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags) = u.h \
             for update of s",
            None,
            &[ids.clone().into(), hashes.clone().into(), e.name.as_str().into(), e.version.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(
            t.filter_map(|t| Some((t.get::<i64>(1).ok().flatten()?, t.get::<bool>(2).ok().flatten().unwrap_or(true)))).collect(),
        )
    })
    .map_err(|err| format!("checking leased rows failed: {err}"))?;
    let keep: std::collections::HashSet<i64> = still.iter().map(|(id, _)| *id).collect();
    let had: Vec<i64> = still.iter().filter(|(_, had)| *had).map(|(id, _)| *id).collect();
    let (mut w_ids, mut w_vecs, mut w_hashes, mut stale) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((id, v), h) in ids.into_iter().zip(vecs).zip(hashes) {
        if keep.contains(&id) {
            w_ids.push(id);
            w_vecs.push(v);
            w_hashes.push(h);
        } else {
            stale.push(id);
        }
    }
    if !w_ids.is_empty() {
        store::write_embeddings(e, vt, &w_ids, &w_vecs, &w_hashes, &had);
        crate::spi::run("dequeuing", "delete from quantops.embedding_queue where signal_id = any($1)", &[w_ids.clone().into()]);
    }
    Ok((w_ids.len() as i64, stale))
}

/// Gives leased rows back to the queue (the attempt does not count) after a stop.
fn release(leased: &[Leased]) {
    let ids: Vec<i64> = leased.iter().map(|l| l.id).collect();
    let _ = in_transaction(move || {
        crate::spi::run(
            "releasing leases",
            "update quantops.embedding_queue set lease_until = null, leased_by = null, leased_hash = null, \
               attempts = greatest(attempts - 1, 0) where signal_id operator(pg_catalog.=) any($1) \
               and leased_by operator(pg_catalog.=) pg_catalog.pg_backend_pid()",
            &[ids.into()],
        )
    });
}

/// Rows that failed retryably before are sent one per request, so a row that keeps failing fails
/// alone and never takes the rows it shared a request with down with it.
const RETRY_SINGLETONS: i64 = 8;

pub struct Leased {
    id: i64,
    attempts: i32,
    text: String,
    hash: Vec<u8>,
    retry: bool,
    /// the row had an embedding when it was leased (one to keep in the history when replaced)
    had: bool,
}

fn lease_batch(e: &Embedder, n: i64, lease_s: f64) -> Result<Vec<Leased>, String> {
    let Some(template) = e.template() else {
        return Err(format!("embedder \"{}\" does not embed text", e.name));
    };
    if !store::still_active(e) {
        return Ok(Vec::new());
    }
    // A queue's statistics are always stale (it fills and drains between two ANALYZEs): planned
    // from them, a backfill's first lease read as 3 rows what were 9,000 and sorted the whole
    // queue for every batch (3 of a batch's 14 ms). The queue is taken in its index's order, in
    // this transaction only. The picked rows are then updated by key (`= any(array(...))`, an
    // index scan on the primary key whatever the statistics say): as a join, planned from a
    // queue analysed while empty, the update read the whole queue once per picked row.
    crate::spi::run("taking the queue in index order", "select pg_catalog.set_config('enable_sort', 'off', true)", &[]);
    let rows: Vec<(i64, i32, emb::SignalInput, Option<Vec<u8>>, bool, bool, bool)> = Spi::connect_mut(|c| {
        let t = crate::spi::kept(
            c,
            "with fresh as ( \
               select q.signal_id from quantops.embedding_queue q \
               where q.next_try_at <= pg_catalog.now() and (q.lease_until is null or q.lease_until < pg_catalog.now()) \
                 and q.last_error_class is null \
               order by q.enqueued_at, q.signal_id limit $3 for update of q skip locked), \
             retried as ( \
               select q.signal_id from quantops.embedding_queue q \
               where q.next_try_at <= pg_catalog.now() and (q.lease_until is null or q.lease_until < pg_catalog.now()) \
                 and q.last_error_class is not null \
               order by q.next_try_at, q.signal_id limit $5 for update of q skip locked), \
             leased as ( \
               update quantops.embedding_queue q set lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => $4), \
                 leased_by = pg_catalog.pg_backend_pid(), attempts = q.attempts + 1 \
               where q.signal_id = any(array(select signal_id from fresh union all select signal_id from retried)) returning q.signal_id, q.attempts, q.last_error_class is not null as retry) \
             select l.signal_id, l.attempts, s.strategy, s.symbol, s.features, s.series, s.rationale, s.tags, \
                    s.input_hash, (s.embedder is distinct from $1 or s.embedder_version is distinct from $2::text), l.retry, \
                    s.embedding is not null \
             from leased l join quantops.signal_embeddings s on s.id = l.signal_id",
            &[e.name.as_str().into(), e.version.into(), n.into(), lease_s.into(), RETRY_SINGLETONS.into()],
        )?;
        // signal_id, attempts and the two booleans are never NULL in this statement
        Ok::<_, pgrx::spi::SpiError>(t.map(|t| {
            (
                t.get::<i64>(1).ok().flatten().unwrap_or(0),
                t.get::<i32>(2).ok().flatten().unwrap_or(1),
                store::read_input(&t, 3),
                t.get::<Vec<u8>>(9).ok().flatten(),
                t.get::<bool>(10).ok().flatten().unwrap_or(true),
                t.get::<bool>(11).ok().flatten().unwrap_or(false),
                t.get::<bool>(12).ok().flatten().unwrap_or(true),
            )
        })
        .collect())
    })
    .map_err(|err| format!("leasing a batch failed: {err}"))?;
    let mut leased = Vec::new();
    let mut unchanged = Vec::new();
    for (id, attempts, input, stored, force, retry, had) in rows {
        // a text embedder hashes its rendered text: it cannot fail
        let h = match emb::input_hash(e, &input) {
            Ok(h) => h.to_vec(),
            Err(err) => return Err(format!("hashing signal {id} failed: {}", err.message())),
        };
        if !force && stored.as_deref() == Some(h.as_slice()) {
            unchanged.push(id);
            continue;
        }
        // the hash stays in memory: the write-back compares it with the row's input then
        // (`embedding_queue.leased_hash` is no longer written: a second update of every leased
        // row that nothing read, 2 of a batch's 14 ms)
        leased.push(Leased { id, attempts, text: emb::render(template, &input), hash: h, retry, had });
    }
    if !unchanged.is_empty() {
        crate::spi::run("dequeuing unchanged rows", "delete from quantops.embedding_queue where signal_id = any($1)", &[unchanged.into()]);
    }
    Ok(leased)
}

fn write_back(
    e: &Embedder,
    vt: &store::VectorType,
    leased: &[Leased],
    results: Vec<Result<Vec<f32>, RowError>>,
    max_attempts: i32,
) -> Result<(i64, i64), String> {
    if !store::still_active(e) {
        // switched to another embedder while we were away: write nothing, give the rows back
        let ids: Vec<i64> = leased.iter().map(|l| l.id).collect();
        crate::spi::run(
            "releasing leases",
            "update quantops.embedding_queue set lease_until = null, leased_by = null, leased_hash = null, \
               attempts = greatest(attempts - 1, 0) where signal_id = any($1) and leased_by = pg_catalog.pg_backend_pid()",
            &[ids.into()],
        );
        return Ok((0, 0));
    }
    let (mut ok_ids, mut ok_vecs, mut ok_hash) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dl_ids, mut dl_hash, mut dl_err, mut dl_att, mut dl_class) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rt_ids, mut rt_delay, mut rt_err) = (Vec::new(), Vec::new(), Vec::new());
    for (l, r) in leased.iter().zip(results) {
        let (id, attempts, h) = (&l.id, &l.attempts, &l.hash);
        match r {
            Ok(v) => {
                ok_ids.push(*id);
                ok_vecs.push(v);
                ok_hash.push(h.clone());
            }
            Err(RowError::Permanent(m)) => {
                dl_ids.push(*id);
                dl_hash.push(Some(h.clone()));
                dl_err.push(m);
                dl_att.push(*attempts);
                dl_class.push("permanent");
            }
            Err(RowError::Retryable { msg, retry_after_ms }) => {
                if *attempts >= max_attempts {
                    dl_ids.push(*id);
                    dl_hash.push(Some(h.clone()));
                    dl_err.push(msg);
                    dl_att.push(*attempts);
                    dl_class.push("retries_exhausted");
                } else {
                    let jitter = (crate::hash::splitmix64(*id as u64, *attempts as u64) >> 11) as f64 / (1u64 << 53) as f64;
                    rt_ids.push(*id);
                    rt_delay.push(emb::backoff_ms(*attempts, 500, 60_000, jitter, retry_after_ms) as f64 / 1000.0);
                    rt_err.push(msg);
                }
            }
        }
    }
    let mut done = 0;
    if !ok_ids.is_empty() {
        let had: std::collections::HashSet<i64> = leased.iter().filter(|l| l.had).map(|l| l.id).collect();
        let (mut first, mut replacing) = ((Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new(), Vec::new()));
        for ((id, v), h) in ok_ids.into_iter().zip(ok_vecs).zip(ok_hash) {
            let to = if had.contains(&id) { &mut replacing } else { &mut first };
            to.0.push(id);
            to.1.push(v);
            to.2.push(h);
        }
        let mut stale = Vec::new();
        if !first.0.is_empty() {
            let (written, left) = write_first(e, vt, first.0, &first.1, first.2)?;
            done += written;
            stale.extend(left);
        }
        if !replacing.0.is_empty() {
            let (written, left) = write_replacing(e, vt, replacing.0, replacing.1, replacing.2)?;
            done += written;
            stale.extend(left);
        }
        if !stale.is_empty() {
            // edited while we were away: stays queued, the attempt does not count
            crate::spi::run(
                "releasing stale leases",
                "update quantops.embedding_queue set lease_until = null, leased_by = null, leased_hash = null, \
                   attempts = greatest(attempts - 1, 0) where signal_id = any($1)",
                &[stale.into()],
            );
        }
    }
    if !rt_ids.is_empty() {
        crate::spi::run(
            "scheduling retries",
            "update quantops.embedding_queue q set lease_until = null, leased_by = null, last_error = u.err, \
               last_error_class = 'retryable', next_try_at = pg_catalog.now() + pg_catalog.make_interval(secs => u.d) \
             from rows from (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::float8[]), pg_catalog.unnest($3::text[])) u(id, d, err) where q.signal_id = u.id",
            &[rt_ids.into(), rt_delay.into(), rt_err.into()],
        );
    }
    let failed = dl_ids.len() as i64;
    for class in ["permanent", "retries_exhausted"] {
        let idx: Vec<usize> = (0..dl_ids.len()).filter(|i| dl_class[*i] == class).collect();
        if idx.is_empty() {
            continue;
        }
        let ids: Vec<i64> = idx.iter().map(|i| dl_ids[*i]).collect();
        let hs: Vec<Option<Vec<u8>>> = idx.iter().map(|i| dl_hash[*i].clone()).collect();
        let errs: Vec<String> = idx.iter().map(|i| dl_err[*i].clone()).collect();
        let atts: Vec<i32> = idx.iter().map(|i| dl_att[*i]).collect();
        store::dead_letter(e, &ids, &hs, &errs, &atts, class);
    }
    Ok((done, failed))
}
