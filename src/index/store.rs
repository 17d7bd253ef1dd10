//! The index capability's storage: measure an IVFFlat index (centers read from its own pages, a
//! sample assigned to them, recall against exact search on demand), record it, decide whether
//! it needs a rebuild, and queue the rebuild for the worker; and the maintain-index job.

use super::config::{recommended_lists, Metric};
use super::core::{self as ivf, Measured, Thresholds};
use super::error::IvfError;
use crate::schedule::JobOutcome;
use crate::spi::{statement, ReportError, Sql};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// An IVFFlat index and what it indexes.
#[derive(Debug, Clone)]
pub struct Target {
    pub index_oid: pg_sys::Oid,
    /// schema-qualified, quoted
    pub index_sql: Sql,
    pub index_schema: String,
    pub index_name: String,
    pub table_oid: pg_sys::Oid,
    pub table_sql: Sql,
    pub column: String,
    pub opclass: String,
    pub metric: Metric,
    pub reloptions: Vec<String>,
    pub simple: bool,
    pub relfilenode: i64,
}

impl Target {
    /// The name the history tables know the index by: schema.name, unquoted.
    pub fn key(&self) -> String {
        format!("{}.{}", self.index_schema, self.index_name)
    }
}

pub const DEFAULT_INDEX: &str = "quantops.signal_embeddings_embedding_ivfflat_idx";

/// Finds the IVFFlat index named by `target` (an index, or a table with one), or quantops' own.
pub fn resolve(target: Option<pg_sys::Oid>) -> Result<Target, IvfError> {
    let oid = match target {
        Some(o) => o,
        None => crate::spi::read_one::<pg_sys::Oid>("select pg_catalog.to_regclass($1)::pg_catalog.oid", &[DEFAULT_INDEX.into()])?
            .ok_or(IvfError::NotConfigured)?,
    };
    // the select cannot fail on its own (a PostgreSQL ERROR propagates); no row: no such relation
    let kind = Spi::connect(|c| {
        let t = c
            .select(
                "select c.relkind::text, c.oid::regclass::text, am.amname::text from pg_catalog.pg_class c \
                 left join pg_catalog.pg_am am on am.oid = c.relam where c.oid = $1",
                None,
                &[oid.into()],
            )
            .ok()?;
        if t.is_empty() {
            return None;
        }
        let r = t.first();
        Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??, r.get::<String>(3).ok().flatten()))
    });
    let (relkind, relname, am) = kind.ok_or(IvfError::NoRelation(oid.to_u32()))?;
    let index_oid = match relkind.as_str() {
        "i" if am.as_deref() == Some("ivfflat") => oid,
        "i" => return Err(IvfError::NotIvfflat(relname)),
        // a partitioned index or table has no pages of its own: each partition has its index
        "I" | "p" => return Err(IvfError::Unsupported(relname, "it is partitioned; name the IVFFlat index of one partition".into())),
        "r" | "m" => crate::spi::read_one::<pg_sys::Oid>(
            "select i.indexrelid from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid \
             join pg_catalog.pg_am am on am.oid = c.relam \
             where i.indrelid = $1 and am.amname = 'ivfflat' order by i.indisvalid desc, i.indexrelid limit 1",
            &[oid.into()],
        )?
        .ok_or(IvfError::NoIvfflat(relname))?,
        _ => return Err(IvfError::NotIvfflat(relname)),
    };
    let row = Spi::connect(|c| {
        let t = c
            .select(
                "select n.nspname::text, ic.relname::text, i.indrelid, i.indrelid::regclass::text, \
                        a.attname::text, o.opcname::text, i.indisvalid, \
                        coalesce(ic.reloptions, '{}')::text[], \
                        (i.indnatts = 1 and i.indkey[0] <> 0 and i.indpred is null and i.indexprs is null), \
                        pg_catalog.pg_relation_filenode(i.indexrelid)::bigint, \
                        tn.nspname::text, tc.relname::text \
                   from pg_catalog.pg_index i \
                   join pg_catalog.pg_class ic on ic.oid = i.indexrelid \
                   join pg_catalog.pg_namespace n on n.oid = ic.relnamespace \
                   join pg_catalog.pg_class tc on tc.oid = i.indrelid \
                   join pg_catalog.pg_namespace tn on tn.oid = tc.relnamespace \
                   join pg_catalog.pg_opclass o on o.oid = i.indclass[0] \
                   left join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0] \
                  where i.indexrelid = $1",
                None,
                &[index_oid.into()],
            )
            .ok()?;
        let r = t.first();
        Some((
            r.get::<String>(1).ok()??,
            r.get::<String>(2).ok()??,
            r.get::<pg_sys::Oid>(3).ok()??,
            r.get::<String>(4).ok()??,
            r.get::<String>(5).ok().flatten(),
            r.get::<String>(6).ok()??,
            r.get::<bool>(7).ok()??,
            r.get::<Vec<String>>(8).ok()??,
            r.get::<bool>(9).ok()??,
            r.get::<i64>(10).ok().flatten().unwrap_or(0),
            r.get::<String>(11).ok()??,
            r.get::<String>(12).ok()??,
        ))
    });
    let (ischema, iname, table_oid, table_name, column, opclass, valid, reloptions, simple, relfilenode, tschema, tname) =
        row.ok_or(IvfError::NoRelation(index_oid.to_u32()))?;
    // the history and the worker's queue know an index as "schema.name": a dot inside either part
    // would make two indexes one name
    if ischema.contains('.') || iname.contains('.') {
        return Err(IvfError::Unsupported(format!("{ischema}.{iname}"), "a schema or index name with a dot in it".into()));
    }
    let index_sql = Sql::qualified(&ischema, &iname);
    if !valid {
        return Err(IvfError::Invalid(format!("{ischema}.{iname}")));
    }
    let column = column.ok_or_else(|| IvfError::Unsupported(iname.clone(), "an index on an expression".into()))?;
    let metric = match opclass.as_str() {
        "vector_l2_ops" => Metric::L2,
        "vector_cosine_ops" => Metric::Cosine,
        "vector_ip_ops" => Metric::InnerProduct,
        other => {
            return Err(IvfError::Unsupported(
                iname,
                format!("operator class {other} (vector_l2_ops, vector_cosine_ops, vector_ip_ops are)"),
            ))
        }
    };
    // the caller (not the definer: the role the call came from) must be allowed to read the table
    let allowed = crate::spi::read_one::<bool>(
        "select pg_catalog.has_table_privilege($1, $2, 'SELECT')",
        &[crate::spi::outer_user().into(), table_oid.into()],
    )?
    .unwrap_or(false);
    if !allowed {
        return Err(IvfError::Denied(table_name));
    }
    Ok(Target {
        index_oid,
        index_sql,
        index_schema: ischema,
        index_name: iname,
        table_oid,
        table_sql: Sql::qualified(&tschema, &tname),
        column,
        opclass,
        metric,
        reloptions,
        simple,
        relfilenode,
    })
}

/// The index's metapage and centers, read from its own pages under a share lock per page.
pub fn read_centers(t: &Target) -> Result<(ivf::Meta, Vec<Vec<f32>>), IvfError> {
    let name = t.key();
    let pages = read_pages(t.index_oid).map_err(|e| IvfError::Pages(name.clone(), e))?;
    let meta = ivf::parse_meta(&pages.0).map_err(|e| IvfError::Pages(name.clone(), e.to_string()))?;
    let mut centers = Vec::with_capacity(meta.lists as usize);
    for p in &pages.1 {
        let lp = ivf::parse_list_page(p, meta.dims as usize).map_err(|e| IvfError::Pages(name.clone(), e.to_string()))?;
        centers.extend(lp.centers);
    }
    if centers.len() != meta.lists as usize {
        return Err(IvfError::Pages(name, format!("found {} centers, the metapage says {} lists", centers.len(), meta.lists)));
    }
    Ok((meta, centers))
}

/// Opens the index with AccessShareLock, hands `f` a reader of its blocks (each copied under a
/// share lock on its buffer) and the number of blocks, and closes it. Inside a transaction; an
/// oid that is not an index, or a block past the end, is a PostgreSQL ERROR (raised, not UB).
fn with_index_blocks<R>(oid: pg_sys::Oid, f: impl FnOnce(&dyn Fn(u32) -> Vec<u8>, u32) -> R) -> R {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: index_open checks the oid (ERROR when it is not an index) and returns an open
    // relation that stays valid until index_close below
    let (rel, nblocks) = unsafe {
        let rel = pg_sys::index_open(oid, lock);
        (rel, pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM))
    };
    let read = |blk: u32| -> Vec<u8> {
        // SAFETY: `rel` is open; the buffer is pinned and share-locked while its BLCKSZ bytes are
        // copied, then released; a block past the end is an ERROR of ReadBufferExtended
        unsafe {
            let buf = pg_sys::ReadBufferExtended(
                rel,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                blk,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_SHARE as i32);
            let page = pg_sys::BufferGetPage(buf) as *const u8;
            let bytes = std::slice::from_raw_parts(page, pg_sys::BLCKSZ as usize).to_vec();
            pg_sys::UnlockReleaseBuffer(buf);
            bytes
        }
    };
    let r = f(&read, nblocks);
    // SAFETY: closes what index_open opened, with the same lock mode (an ERROR in `f` ends the
    // transaction, which closes it instead)
    unsafe { pg_sys::index_close(rel, lock) };
    r
}

fn read_pages(oid: pg_sys::Oid) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    with_index_blocks(oid, |read, nblocks| {
        if nblocks < 2 {
            Err(format!("it has {nblocks} pages"))
        } else {
            let meta = read(ivf::METAPAGE_BLKNO);
            let mut dir = Vec::new();
            let mut blk = ivf::HEAD_BLKNO;
            while blk != ivf::INVALID_BLOCK && blk < nblocks && dir.len() <= nblocks as usize {
                let p = read(blk);
                let special = u16::from_le_bytes([p[16], p[17]]) as usize;
                let next = if special + 4 <= p.len() {
                    u32::from_le_bytes([p[special], p[special + 1], p[special + 2], p[special + 3]])
                } else {
                    ivf::INVALID_BLOCK
                };
                dir.push(p);
                blk = next;
            }
            Ok((meta, dir))
        }
    })
}

/// A sample of the indexed column (about `n` rows, Bernoulli, fixed seed) with each row's ctid.
/// Bernoulli draws a little more than `n` rows spread over the whole table; an even stride over
/// them (never LIMIT, which would keep the first rows in physical order and miss the newest)
/// brings it down to `n`.
fn sample(t: &Target, rows: i64, n: i64, seed: i32) -> Vec<(String, Vec<f32>)> {
    // what follows a sample runs on quantops' thread pool: start it here, where a failure (a
    // process or thread limit) is an error with its SQLSTATE (53000)
    if let Err(e) = crate::threads::pool() {
        crate::error::raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES, e);
    }
    let pct = if rows <= 0 { 100.0 } else { (100.0 * (n as f64) * 1.2 / rows as f64).min(100.0) };
    let col = Sql::ident(&t.column);
    let sql = statement(
        "select ctid::text, {}::real[] from {} tablesample bernoulli ($1) repeatable ($2) where {} is not null",
        &[&col, &t.table_sql, &col],
    );
    let all: Vec<(String, Vec<f32>)> = Spi::connect(|c| {
        let tab = c
            .select(&sql, None, &[pct.into(), (seed as f64).into()])
            .unwrap_or_else(|e| crate::spi::failed(&format!("sampling {}", t.table_sql), e).report_error());
        let mut out = Vec::new();
        for r in tab {
            if let (Ok(Some(id)), Ok(Some(v))) = (r.get::<String>(1), r.get::<Vec<f32>>(2)) {
                out.push((id, v));
            }
        }
        out
    });
    ivf::even_subset(all, n.max(0) as usize)
}

/// Rows with a vector (exact), and the table's cumulative insert and delete counters.
pub fn table_stats(t: &Target) -> (i64, Option<i64>, Option<i64>) {
    let col = Sql::ident(&t.column);
    let rows = crate::spi::read_one::<i64>(&statement("select count(*) from {} where {} is not null", &[&t.table_sql, &col]), &[])
        .unwrap_or_else(|e| crate::spi::failed("counting the table's vectors", e).report_error())
        .unwrap_or(0);
    let (ins, del) = crate::spi::read_two::<i64, i64>(
        "select n_tup_ins, n_tup_del from pg_catalog.pg_stat_all_tables where relid = $1",
        &[t.table_oid.into()],
    )
    .unwrap_or_else(|e| crate::spi::failed("reading the table's statistics", e).report_error());
    (rows, ins, del)
}

/// The rebuild thresholds (quantops.index_policy's one row, which no API role may delete; its
/// defaults if the owner removed it).
fn thresholds() -> (Thresholds, f64, i32, String) {
    Spi::connect(|c| {
        let t = c
            .select(
                "select max_balance, max_drift, max_lists_factor, max_churn, target_recall, sample_rows, min_interval::text \
                 from quantops.index_policy",
                None,
                &[],
            )
            .ok()?;
        let r = t.first();
        Some((
            Thresholds {
                max_balance: r.get::<f64>(1).ok()??,
                max_drift: r.get::<f64>(2).ok()??,
                max_lists_factor: r.get::<f64>(3).ok()??,
                max_churn: r.get::<f64>(4).ok()??,
            },
            r.get::<f64>(5).ok()??,
            r.get::<i32>(6).ok()??,
            r.get::<String>(7).ok()??,
        ))
    })
    .unwrap_or((Thresholds::default(), 0.95, 5000, "01:00:00".into()))
}

/// The baseline of the current build: (mean distance, rows, tup_ins, tup_del, method, balance).
type Baseline = (f64, Option<i64>, Option<i64>, Option<i64>, String, Option<f64>);
fn baseline(t: &Target) -> Option<Baseline> {
    Spi::connect(|c| {
        let tab = c
            .select(
                "select mean_distance_at_build, rows_at_build, tup_ins_at_build, tup_del_at_build, method, balance_at_build \
                   from quantops.index_builds where index_name = $1 and relfilenode = $2 \
                    and status in ('succeeded', 'observed') and mean_distance_at_build is not null \
                  order by id desc limit 1",
                None,
                &[t.key().into(), t.relfilenode.into()],
            )
            .ok()?;
        if tab.is_empty() {
            return None;
        }
        let r = tab.first();
        Some((
            r.get::<f64>(1).ok()??,
            r.get::<i64>(2).ok().flatten(),
            r.get::<i64>(3).ok().flatten(),
            r.get::<i64>(4).ok().flatten(),
            r.get::<String>(5).ok().flatten().unwrap_or_default(),
            r.get::<f64>(6).ok().flatten(),
        ))
    })
}

/// Options of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub recall: bool,
    pub k: i32,
    pub queries: i32,
    pub target_recall: Option<f64>,
    pub sample_rows: Option<i32>,
    pub record: bool,
}

/// Measures the index; returns the health document (and records it when asked).
pub fn measure(t: &Target, o: &Options) -> Result<Value, IvfError> {
    let started = std::time::Instant::now();
    let (th, target_default, sample_default, _min_interval) = thresholds();
    let target_recall = o.target_recall.unwrap_or(target_default);
    let n = o.sample_rows.unwrap_or(sample_default) as i64;
    let (meta, centers) = read_centers(t)?;
    let (rows, ins, del) = table_stats(t);
    let mut smp = sample(t, rows, n, 20261125);
    for (_, v) in smp.iter_mut() {
        ivf::prepare(v, t.metric);
    }
    let vecs: Vec<Vec<f32>> = smp.iter().map(|(_, v)| v.clone()).collect();
    let a = ivf::assign(&vecs, &centers, t.metric);
    let bal = ivf::balance(&a.counts);
    let empty = a.counts.iter().filter(|c| **c == 0).count();

    // the drift baseline: the mean distance measured right after the build quantops made or saw;
    // an index quantops never saw gets a reference k-means on half the sample, judged on the other
    let (base, source, rows_at_build, churn, ins_since, del_since, bal_base) = match baseline(t) {
        Some((b, rab, ib, db, method, bb)) => {
            let ins_since = match (ins, ib) {
                (Some(a), Some(b)) if a >= b => Some(a - b),
                _ => None,
            };
            let del_since = match (del, db) {
                (Some(a), Some(b)) if a >= b => Some(a - b),
                _ => None,
            };
            let churn = match (ins_since, del_since, rab) {
                (Some(i), Some(d), Some(r)) if r > 0 => Some((i + d) as f64 / r as f64),
                _ => None,
            };
            (
                b,
                if method == "observed" { "reference k-means when first seen".to_string() } else { "measured after build".to_string() },
                rab,
                churn,
                ins_since,
                del_since,
                bb,
            )
        }
        None => {
            // fitted like pgvector fits (50 rows per list), judged on the health sample
            let want = (50 * meta.lists as i64).clamp(1000, 25_000);
            let mut fit: Vec<Vec<f32>> = sample(t, rows, want, 77).into_iter().map(|(_, v)| v).collect();
            fit.iter_mut().for_each(|v| ivf::prepare(v, t.metric));
            let (reference, ref_balance) = if fit.is_empty() || vecs.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                let cs = ivf::kmeans(&fit, (meta.lists as usize).min(fit.len()), 8, t.metric, 7);
                let r = ivf::assign(&vecs, &cs, t.metric);
                (r.mean_distance, ivf::balance(&r.counts))
            };
            let ref_balance = if ref_balance.is_finite() { Some(ref_balance) } else { None };
            if o.record && reference.is_finite() {
                crate::spi::run(
                    "recording the observed build",
                    "insert into quantops.index_builds (index_name, relfilenode, status, method, lists, started_at, finished_at, \
                       rows_at_build, tup_ins_at_build, tup_del_at_build, mean_distance_at_build, balance_at_build, reasons) \
                     values ($1, $2, 'observed', 'observed', $3, pg_catalog.now(), pg_catalog.now(), $4, $5, $6, $7, $8, \
                       '[\"first seen by quantops: drift is measured against a reference k-means of a sample\"]')",
                    &[
                        t.key().into(),
                        t.relfilenode.into(),
                        (meta.lists as i32).into(),
                        rows.into(),
                        ins.into(),
                        del.into(),
                        reference.into(),
                        ref_balance.into(),
                    ],
                );
            }
            (reference, "reference k-means when first seen".to_string(), Some(rows), Some(0.0), Some(0), Some(0), ref_balance)
        }
    };
    let drift = if base > 0.0 && a.mean_distance.is_finite() { a.mean_distance / base } else { f64::NAN };
    let growth = match bal_base {
        Some(b) if b > 0.0 && bal.is_finite() => Some(bal / b),
        _ => None,
    };
    let measured = Measured { rows, lists: meta.lists as i32, balance: bal, balance_growth: growth, drift, churn };
    let decision = ivf::decide(&measured, &th);
    let lop = ivf::lopsided(&a.counts);
    let vector_version: String =
        crate::spi::read_one("select extversion::text from pg_catalog.pg_extension where extname = 'vector'", &[])?.unwrap_or_default();

    let recall = if o.recall { Some(measure_recall(t, &smp, o.k, o.queries, target_recall, meta.lists as i32)?) } else { None };
    let fnum = |x: f64| if x.is_finite() { json!((x * 10000.0).round() / 10000.0) } else { Value::Null };
    let mut h = json!({
        "index": t.key(),
        "table": t.table_sql.as_str(),
        "metric": t.metric.name(),
        "dims": meta.dims,
        "lists": meta.lists,
        "recommended_lists": recommended_lists(rows),
        "probes": ivf::probes_default(meta.lists as i32),
        "rows": rows,
        "rows_at_build": rows_at_build,
        "inserted_since_build": ins_since,
        "deleted_since_build": del_since,
        "churn": churn.map(fnum),
        "sample_rows": vecs.len(),
        "balance": fnum(bal),
        "balance_at_build": bal_base.map(fnum),
        "balance_growth": growth.map(fnum),
        "max_list_share": fnum(ivf::max_share(&a.counts)),
        "empty_lists": empty,
        "mean_distance": fnum(a.mean_distance),
        "mean_distance_at_build": fnum(base),
        "baseline": source,
        "drift": fnum(drift),
        "lopsided": lop,
        "needs_rebuild": decision.rebuild,
        "rebuild_lists": decision.lists,
        "reasons": decision.reasons,
        "pgvector": vector_version,
        "duration_ms": (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
    });
    if lop {
        h["warning"] = json!(if version_before(&vector_version, (0, 8, 3)) {
            format!("the lists are lopsided; pgvector {vector_version} samples time-ordered tables badly when it builds (fixed in 0.8.3): upgrade pgvector, or rebuild after the data is spread")
        } else {
            "the lists are lopsided: most rows fall into a few lists".to_string()
        });
    }
    if let Some(r) = recall {
        h["recall"] = r;
    }
    if o.record {
        crate::spi::run(
            "recording the index health",
            "insert into quantops.index_health_log (index_name, health) values ($1, $2)",
            &[t.key().into(), JsonB(h.clone()).into()],
        );
        if let Some(p) = h["recall"]["probes_for_target"].as_i64() {
            if t.key() == DEFAULT_INDEX {
                crate::spi::run("recording the search probes", "update quantops.settings set search_probes = $1", &[(p as i32).into()]);
            }
        }
    }
    Ok(h)
}

/// The index's state without a sample, cheap enough for every prune run's before and after:
/// live rows (statistics), lists against the recommendation, churn since the build, and the
/// balance and drift of the last full measurement (with its time).
pub fn state(t: &Target) -> Result<Value, IvfError> {
    let pages = read_pages_meta(t.index_oid).map_err(|e| IvfError::Pages(t.key(), e))?;
    let meta = ivf::parse_meta(&pages).map_err(|e| IvfError::Pages(t.key(), e.to_string()))?;
    let (live, ins, del) = Spi::connect(|c| {
        let tab = c
            .select(
                "select n_live_tup, n_tup_ins, n_tup_del from pg_catalog.pg_stat_all_tables where relid = $1",
                None,
                &[t.table_oid.into()],
            )
            .ok()?;
        if tab.is_empty() {
            return None;
        }
        let r = tab.first();
        Some((r.get::<i64>(1).ok().flatten(), r.get::<i64>(2).ok().flatten(), r.get::<i64>(3).ok().flatten()))
    })
    .unwrap_or((None, None, None));
    let rows = live.unwrap_or(0);
    let churn = baseline(t).and_then(|(_, rab, ib, db, _, _)| match (ins, ib, del, db, rab) {
        (Some(i), Some(ib), Some(d), Some(db), Some(r)) if r > 0 && i >= ib && d >= db => Some(((i - ib) + (d - db)) as f64 / r as f64),
        _ => None,
    });
    let last: Option<JsonB> = Spi::get_one_with_args(
        "select pg_catalog.jsonb_build_object('balance', health -> 'balance', 'drift', health -> 'drift', \
           'needs_rebuild', health -> 'needs_rebuild', 'measured_at', measured_at) \
           from quantops.index_health_log where index_name = $1 order by id desc limit 1",
        &[t.key().into()],
    )
    .ok()
    .flatten();
    Ok(json!({
        "rows": rows,
        "lists": meta.lists,
        "recommended_lists": recommended_lists(rows),
        "churn": churn.map(|c| (c * 10000.0).round() / 10000.0),
        "last_measured": last.map(|j| j.0),
    }))
}

fn read_pages_meta(oid: pg_sys::Oid) -> Result<Vec<u8>, String> {
    with_index_blocks(oid, |read, nblocks| if nblocks < 1 { Err("it has no pages".to_string()) } else { Ok(read(ivf::METAPAGE_BLKNO)) })
}

/// Mean distance of a sample to the index's centers and the balance: the baseline of a build
/// just made (None where there are no rows to measure).
pub fn build_baseline(t: &Target, centers: &[Vec<f32>], rows: i64) -> (Option<f64>, Option<f64>) {
    let (_, _, sample_default, _) = thresholds();
    let mut vecs: Vec<Vec<f32>> = sample(t, rows, sample_default as i64, 20261125).into_iter().map(|(_, v)| v).collect();
    vecs.iter_mut().for_each(|v| ivf::prepare(v, t.metric));
    let a = ivf::assign(&vecs, centers, t.metric);
    let b = ivf::balance(&a.counts);
    (Some(a.mean_distance).filter(|x| x.is_finite()), Some(b).filter(|x| x.is_finite()))
}

/// Records a build made in this transaction (quantops.configure) with its baseline.
pub fn record_build(method: &str, reason: &str) -> Result<(), IvfError> {
    let t = resolve(None)?;
    let (meta, centers) = read_centers(&t)?;
    let (rows, ins, del) = table_stats(&t);
    let (md, bb) = build_baseline(&t, &centers, rows);
    crate::spi::run(
        "recording the build",
        "insert into quantops.index_builds (index_name, relfilenode, status, method, lists, started_at, finished_at, \
           rows_at_build, tup_ins_at_build, tup_del_at_build, mean_distance_at_build, reasons, balance_at_build) \
         values ($1, $2, 'succeeded', $3, $4, pg_catalog.now(), pg_catalog.clock_timestamp(), $5, $6, $7, $8, $9, $10)",
        &[
            t.key().into(),
            t.relfilenode.into(),
            method.into(),
            (meta.lists as i32).into(),
            rows.into(),
            ins.into(),
            del.into(),
            md.into(),
            JsonB(json!([reason])).into(),
            bb.into(),
        ],
    );
    Ok(())
}

fn version_before(v: &str, (a, b, c): (u32, u32, u32)) -> bool {
    let p: Vec<u32> = v.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    let got = (p.first().copied().unwrap_or(0), p.get(1).copied().unwrap_or(0), p.get(2).copied().unwrap_or(0));
    got < (a, b, c)
}

/// recall@k of the index against exact search, on `queries` rows of the sample used as queries
/// (each query's own row left out of both answers), at the default probes and then up the probe
/// ladder until the target recall is reached.
fn measure_recall(t: &Target, smp: &[(String, Vec<f32>)], k: i32, queries: i32, target: f64, lists: i32) -> Result<Value, IvfError> {
    if !(1..=100).contains(&k) {
        return Err(IvfError::Param("k", format!("{k} (between 1 and 100)")));
    }
    if !(1..=1000).contains(&queries) {
        return Err(IvfError::Param("queries", format!("{queries} (between 1 and 1000)")));
    }
    if !(target > 0.0 && target <= 1.0) {
        return Err(IvfError::Param("target_recall", format!("{target} (above 0, at most 1)")));
    }
    let vschema = crate::spi::vector_schema().unwrap_or_else(|| Sql::ident("public"));
    let op = Sql::fixed(match t.metric {
        Metric::L2 => "<->",
        Metric::Cosine => "<=>",
        Metric::InnerProduct => "<#>",
    });
    let col = Sql::ident(&t.column);
    let sql = statement(
        "select ctid::text from {} where {} is not null order by {} operator({}.{}) $1::real[]::{} limit $2",
        &[&t.table_sql, &col, &col, &vschema, &op, &Sql::in_schema(&vschema, "vector")],
    );
    let step = (smp.len() / queries.max(1) as usize).max(1);
    let qs: Vec<&(String, Vec<f32>)> = smp.iter().step_by(step).take(queries as usize).collect();
    let set = |name: &str, value: &str| {
        crate::spi::run("setting a search parameter", "select pg_catalog.set_config($1, $2, true)", &[name.into(), value.into()]);
    };
    let search = |q: &(String, Vec<f32>)| -> Vec<String> {
        Spi::connect(|c| {
            let tab = c
                .select(&sql, None, &[q.1.clone().into(), (k as i64 + 1).into()])
                .unwrap_or_else(|e| crate::spi::failed("the recall query", e).report_error());
            tab.filter_map(|r| r.get::<String>(1).ok().flatten()).filter(|id| *id != q.0).take(k as usize).collect()
        })
    };
    // exact: no index
    set("enable_indexscan", "off");
    set("enable_bitmapscan", "off");
    let truth: Vec<Vec<String>> = qs.iter().map(|q| search(q)).collect();
    set("enable_indexscan", "on");
    set("enable_seqscan", "off");
    set("ivfflat.iterative_scan", "off");
    let at = |probes: i32| -> ivf::Recall {
        set("ivfflat.probes", &probes.to_string());
        let per: Vec<f64> = qs
            .iter()
            .zip(&truth)
            .map(|(q, tr)| {
                let found = search(q);
                if tr.is_empty() {
                    1.0
                } else {
                    tr.iter().filter(|x| found.contains(x)).count() as f64 / tr.len() as f64
                }
            })
            .collect();
        ivf::recall_stats(&per)
    };
    let default_probes = ivf::probes_default(lists);
    let at_default = at(default_probes);
    let mut ladder = Vec::new();
    let mut found = None;
    for p in ivf::probe_ladder(lists) {
        let r = if p == default_probes { at_default } else { at(p) };
        ladder.push(json!({ "probes": p, "recall": r.mean }));
        if r.mean >= target {
            found = Some(p);
            break;
        }
    }
    set("enable_seqscan", "on");
    let r4 = |x: f64| if x.is_finite() { json!((x * 10000.0).round() / 10000.0) } else { Value::Null };
    Ok(json!({
        "k": k,
        "queries": qs.len(),
        "probes": default_probes,
        "recall": r4(at_default.mean),
        "ci95": [r4(at_default.low), r4(at_default.high)],
        "target": target,
        "probes_for_target": found,
        "ladder": ladder,
    }))
}

/// The statements a rebuild runs, in order (each a top-level statement).
pub fn plan_statements(t: &Target, lists: i32, current_lists: i32) -> (String, Vec<String>) {
    if lists == current_lists || !t.simple {
        ("reindex_concurrently".into(), vec![statement("reindex index concurrently {}", &[&t.index_sql])])
    } else {
        let tmp_name = swap_name(&t.index_name);
        let opts: Vec<Sql> = t
            .reloptions
            .iter()
            .filter(|o| !o.starts_with("lists="))
            .cloned()
            .chain(std::iter::once(format!("lists={lists}")))
            .map(|o| {
                let (k, v) = o.split_once('=').unwrap_or((&o, ""));
                Sql::join(&[Sql::ident(k), Sql::literal(v)], " = ")
            })
            .collect();
        let vschema = crate::spi::vector_schema().unwrap_or_else(|| Sql::ident("public"));
        (
            "create_concurrently_swap".into(),
            vec![
                statement(
                    "create index concurrently {} on {} using ivfflat ({} {}) with ({})",
                    &[
                        &Sql::ident(&tmp_name),
                        &t.table_sql,
                        &Sql::ident(&t.column),
                        &Sql::in_schema(&vschema, &t.opclass),
                        &Sql::join(&opts, ", "),
                    ],
                ),
                statement("drop index concurrently {}", &[&t.index_sql]),
                statement("alter index {} rename to {}", &[&Sql::qualified(&t.index_schema, &tmp_name), &Sql::ident(&t.index_name)]),
            ],
        )
    }
}

/// The name a rebuild builds the new index under before the swap.
pub fn swap_name(index: &str) -> String {
    format!("{}_qo_new", truncate(index, 55))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The plan with its health cut to what a job_runs row keeps (the full document is in
/// quantops.index_health_log).
pub fn summarize_plan(mut plan: Value) -> Value {
    if let Some(h) = plan.get_mut("health") {
        *h = json!({ "balance": h["balance"], "drift": h["drift"], "lists": h["lists"], "rows": h["rows"] });
    }
    plan
}

/// Measures the index and decides; when it needs a rebuild (or `force`), queues one for the
/// worker (CREATE/REINDEX ... CONCURRENTLY cannot run inside a function) and wakes it.
pub fn plan(t: &Target, force: bool, dry_run: bool, by: &str) -> Result<Value, IvfError> {
    let health = measure(t, &Options { recall: false, k: 10, queries: 50, target_recall: None, sample_rows: None, record: true })?;
    let (_, _, _, min_interval) = thresholds();
    let lists_now = health["lists"].as_i64().unwrap_or(1) as i32;
    let mut lists = health["rebuild_lists"].as_i64().unwrap_or(lists_now as i64) as i32;
    if force && lists == lists_now && lists_now < recommended_lists(health["rows"].as_i64().unwrap_or(0)) / 2 {
        lists = recommended_lists(health["rows"].as_i64().unwrap_or(0));
    }
    let mut rebuild = force || health["needs_rebuild"].as_bool().unwrap_or(false);
    let mut reasons: Vec<Value> = health["reasons"].as_array().cloned().unwrap_or_default();
    if force {
        reasons.push(json!("forced"));
    }
    let recent: Option<String> = Spi::get_one_with_args(
        "select finished_at::text from quantops.index_builds where index_name = $1 and status = 'succeeded' \
           and method in ('reindex_concurrently', 'create_concurrently_swap') \
           and finished_at > pg_catalog.now() - $2::interval order by id desc limit 1",
        &[t.key().into(), min_interval.clone().into()],
    )
    .ok()
    .flatten();
    if rebuild && !force {
        if let Some(at) = &recent {
            rebuild = false;
            reasons.push(json!(format!("not now: the last rebuild finished at {at}, within min_interval {min_interval}")));
        }
    }
    let (method, statements) = plan_statements(t, lists, lists_now);
    let mut out = json!({
        "index": t.key(),
        "rebuild": rebuild,
        "lists": lists,
        "method": method,
        "reasons": reasons,
        "statements": statements,
        "health": health,
        "dry_run": dry_run,
    });
    if rebuild && !dry_run {
        let existing: Option<i64> = crate::spi::read_one(
            "select id from quantops.index_builds where index_name = $1 and status in ('queued', 'running')",
            &[t.key().into()],
        )?;
        let id = match existing {
            Some(id) => id,
            // INSERT ... RETURNING returns its row
            None => crate::spi::write_one::<i64>(
                "insert into quantops.index_builds (index_name, status, method, lists, requested_by, reasons, statements, health_before) \
                 values ($1, 'queued', $2, $3, $4, $5, $6, $7) returning id",
                &[
                    t.key().into(),
                    method.clone().into(),
                    lists.into(),
                    by.into(),
                    JsonB(json!(reasons)).into(),
                    statements.clone().into(),
                    JsonB(out["health"].clone()).into(),
                ],
            )?
            .unwrap_or_default(),
        };
        out["request_id"] = json!(id);
        out["executed_by"] = json!(if crate::runtime::preloaded() || crate::runtime::scheduler_running() {
            "the quantops scheduler worker"
        } else {
            "nobody yet: quantops is not in shared_preload_libraries; run the statements yourself"
        });
        crate::runtime::wake_at_commit();
    }
    Ok(out)
}

/// The `maintain-index` job from SQL (`run_job`): measure and queue; the worker runs the rebuild.
pub fn sql_job() -> Result<JobOutcome, String> {
    let t = match resolve(None) {
        Ok(t) => t,
        Err(IvfError::NotConfigured) => {
            return Ok(JobOutcome { rows: 0, details: json!({ "skipped": "quantops has no IVFFlat index yet" }) })
        }
        Err(e) => return Err(e.to_string()),
    };
    let p = plan(&t, false, false, "job").map_err(|e| e.to_string())?;
    Ok(JobOutcome { rows: 0, details: summarize_plan(p) })
}

#[cfg(test)]
mod tests {
    use super::version_before;

    #[test]
    fn versions() {
        assert!(version_before("0.8.0", (0, 8, 3)));
        assert!(version_before("0.7.4", (0, 8, 3)));
        assert!(!version_before("0.8.3", (0, 8, 3)));
        assert!(!version_before("0.9.0", (0, 8, 3)));
    }
}
