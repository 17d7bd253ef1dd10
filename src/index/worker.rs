//! The worker's side of index maintenance: the scheduled check (measure, decide, queue) and the
//! execution of queued rebuilds as top-level statements, outside any function:
//! drop an INVALID index left by a failed concurrent build, size maintenance_work_mem for the
//! build, check the disk, REINDEX CONCURRENTLY (or CREATE INDEX CONCURRENTLY with the new lists,
//! DROP INDEX CONCURRENTLY the old one, rename), then measure again.

use super::core as ivf;
use super::error::IvfError;
use super::store::{measure, plan, plan_statements, resolve, Options, DEFAULT_INDEX};
use crate::schedule::JobOutcome;
use crate::spi::{statement, Sql};
use crate::xact::{in_transaction, toplevel};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// The scheduled job: measure and queue when needed, then run what is queued.
pub fn run() -> Result<JobOutcome, String> {
    let planned = in_transaction(|| -> Result<Value, String> {
        match resolve(None) {
            Ok(t) => plan(&t, false, false, "worker").map_err(|e| e.to_string()),
            // nothing to maintain before quantops.configure() built the index
            Err(IvfError::NotConfigured) => Ok(json!({ "skipped": "quantops has no IVFFlat index yet" })),
            Err(e) => Err(e.to_string()),
        }
    })??;
    let done = execute_queued();
    let mut details = super::store::summarize_plan(planned);
    details["rebuilds_run"] = json!(done);
    Ok(JobOutcome { rows: done.len() as i64, details })
}

/// The worker's pass (the registry's `each_pass`): rebuilds queued by `maintain_index()`.
pub fn each_pass() {
    execute_queued();
}

/// At the worker's start: a rebuild left 'running' by an earlier incarnation of the worker failed.
pub fn on_worker_start() {
    crate::spi::run(
        "marking interrupted rebuilds",
        "update quantops.index_builds set status = 'failed', finished_at = pg_catalog.clock_timestamp(), \
           error = 'interrupted: the worker stopped before the rebuild ended' where status = 'running'",
        &[],
    );
}

/// Runs every queued rebuild; returns each one's outcome.
pub fn execute_queued() -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..8 {
        let claimed = in_transaction(|| {
            Spi::connect_mut(|c| {
                let t = c
                    .update(
                        "update quantops.index_builds set status = 'running', started_at = pg_catalog.clock_timestamp() \
                         where id = (select id from quantops.index_builds where status = 'queued' order by id limit 1 for update skip locked) \
                         returning id, index_name, lists",
                        None,
                        &[],
                    )
                    .ok()?;
                if t.is_empty() {
                    return None;
                }
                let r = t.first();
                Some((r.get::<i64>(1).ok()??, r.get::<String>(2).ok()??, r.get::<i32>(3).ok().flatten()))
            })
        });
        let (id, name, lists) = match claimed {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                warning!("quantops: claiming a queued rebuild failed: {e}");
                break;
            }
        };
        let result = execute(id, &name, lists);
        let (status, err) = match &result {
            Ok(_) => ("succeeded", None),
            Err(e) => ("failed", Some(crate::jobs::core::clip(e))),
        };
        if let Err(e) = &result {
            warning!("quantops: rebuild {id} of index \"{name}\" failed: {e}");
        }
        // a rebuild left 'running' would hold its index's one pending slot: try twice, then say so
        let record = || {
            let e2 = err.clone();
            in_transaction(move || {
                crate::spi::run(
                    "recording a rebuild's end",
                    "update quantops.index_builds set status = $2, error = $3, finished_at = pg_catalog.clock_timestamp() where id = $1",
                    &[id.into(), status.into(), e2.into()],
                )
            })
        };
        if let Err(e) = record().or_else(|_| record()) {
            warning!("quantops: could not record the end of rebuild {id}: {e}");
        }
        out.push(json!({ "id": id, "index": name, "status": status, "error": result.err() }));
    }
    out
}

fn execute(id: i64, name: &str, lists: Option<i32>) -> Result<(), String> {
    let n = name.to_string();
    // what to run, measured now (the request may be older than the data)
    let prep = in_transaction(move || -> Result<(Vec<String>, Vec<Sql>, u64, u64, String, i32), String> {
        let oid = Spi::get_one_with_args::<pg_sys::Oid>("select pg_catalog.to_regclass($1)::oid", &[quote_qualified(&n).as_str().into()])
            .ok()
            .flatten()
            .ok_or_else(|| format!("index \"{n}\" does not exist any more"))?;
        let t = resolve(Some(oid)).map_err(|e| e.to_string())?;
        let (meta, _) = super::store::read_centers(&t).map_err(|e| e.to_string())?;
        let rows: i64 = Spi::get_one(&statement("select count(*) from {}", &[&t.table_sql])).ok().flatten().unwrap_or(0);
        let lists = lists.unwrap_or(meta.lists as i32);
        let (method, stmts) = plan_statements(&t, lists, meta.lists as i32);
        // leftovers of failed concurrent builds on this table: INVALID IVFFlat indexes
        let leftovers: Vec<Sql> = Spi::connect(|c| {
            c.select(
                "select n.nspname::pg_catalog.text, c.relname::pg_catalog.text \
                   from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid \
                   join pg_catalog.pg_namespace n on n.oid = c.relnamespace join pg_catalog.pg_am am on am.oid = c.relam \
                  where i.indrelid = $1 and not i.indisvalid and am.amname = 'ivfflat'",
                None,
                &[t.table_oid.into()],
            )
            .map(|tab| tab.filter_map(|r| Some(Sql::qualified(&r.get::<String>(1).ok()??, &r.get::<String>(2).ok()??))).collect())
            .unwrap_or_default()
        });
        let mem = ivf::build_memory_bytes(lists, meta.dims as i32, rows);
        let disk = ivf::index_disk_bytes(lists, meta.dims as i32, rows);
        crate::spi::run(
            "recording the rebuild's plan",
            "update quantops.index_builds set method = $2, lists = $3, statements = $4 where id = $1",
            &[id.into(), method.clone().into(), lists.into(), stmts.clone().into()],
        );
        Ok((stmts, leftovers, mem, disk, method, lists))
    })??;
    let (stmts, leftovers, mem, disk, _method, _lists) = prep;
    for l in &leftovers {
        log!("quantops: dropping invalid index {l} left by a failed concurrent build");
        toplevel::run(&statement("drop index concurrently if exists {}", &[l]))?;
    }
    let free = free_disk_bytes();
    if let Some(f) = free {
        if f < disk.saturating_mul(2) {
            return Err(format!(
                "not enough disk: the new index needs about {} MB and {} MB are free (quantops wants twice the index size)",
                disk >> 20,
                f >> 20
            ));
        }
    }
    // maintenance_work_mem for this session only, never lowered
    let kb = (mem / 1024).max(1024);
    let cur_kb: i64 = in_transaction(|| {
        Spi::get_one::<i64>("select pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) / 1024")
            .ok()
            .flatten()
            .unwrap_or(65536)
    })
    .unwrap_or(65536);
    let set_mem = (kb as i64) > cur_kb;
    if set_mem {
        toplevel::run(&statement("set maintenance_work_mem = {}", &[&Sql::literal(&format!("{kb}kB"))]))?;
    }
    let mut result = Ok(());
    for s in &stmts {
        log!("quantops: rebuild {id}: {s}");
        if let Err(e) = toplevel::run(s) {
            result = Err(format!("{s}: {e}"));
            break;
        }
    }
    if set_mem {
        if let Err(e) = toplevel::run("reset maintenance_work_mem") {
            warning!("quantops: could not reset maintenance_work_mem after rebuild {id}: {e}");
        }
    }
    if result.is_err() {
        // a failed CREATE INDEX CONCURRENTLY leaves an INVALID index: drop it now
        if stmts.first().is_some_and(|s| s.starts_with("create index concurrently ")) {
            let (schema, index) = name.split_once('.').unwrap_or(("public", name));
            let tmp = Sql::qualified(schema, &super::store::swap_name(index));
            let _ = toplevel::run(&statement("drop index concurrently if exists {}", &[&tmp]));
        }
        return result;
    }
    // measure the new build: its baseline, and whether pgvector's sampling left it lopsided
    let n = name.to_string();
    in_transaction(move || -> Result<(), String> {
        let oid = Spi::get_one_with_args::<pg_sys::Oid>("select pg_catalog.to_regclass($1)::oid", &[quote_qualified(&n).as_str().into()])
            .ok()
            .flatten()
            .ok_or_else(|| format!("index \"{n}\" is gone after the rebuild"))?;
        let t = resolve(Some(oid)).map_err(|e| e.to_string())?;
        // the new build's baseline first, so that the health below measures drift against it
        let (meta, centers) = super::store::read_centers(&t).map_err(|e| e.to_string())?;
        let (rows, ins, del) = super::store::table_stats(&t);
        let (md, bb) = super::store::build_baseline(&t, &centers, rows);
        crate::spi::run(
            "recording the build",
            "update quantops.index_builds set relfilenode = $2, rows_at_build = $3, tup_ins_at_build = $4, tup_del_at_build = $5, \
               lists = $6 where id = $1",
            &[id.into(), t.relfilenode.into(), rows.into(), ins.into(), del.into(), (meta.lists as i32).into()],
        );
        crate::spi::run(
            "recording the build's baseline",
            "update quantops.index_builds set mean_distance_at_build = $2, balance_at_build = $3, status = 'succeeded', \
               finished_at = pg_catalog.clock_timestamp() where id = $1",
            &[id.into(), md.into(), bb.into()],
        );
        // now measured against its own baseline
        let h = measure(&t, &Options { recall: false, k: 10, queries: 50, target_recall: None, sample_rows: None, record: true })
            .map_err(|e| e.to_string())?;
        crate::spi::run(
            "recording the health after the rebuild",
            "update quantops.index_builds set health_after = $2 where id = $1",
            &[id.into(), JsonB(h.clone()).into()],
        );
        if t.key() == DEFAULT_INDEX {
            crate::spi::run(
                "recording the lists",
                "update quantops.settings set index_lists = $1, search_probes = null",
                &[(meta.lists as i32).into()],
            );
        }
        if h["lopsided"].as_bool().unwrap_or(false) {
            warning!("quantops: the rebuilt index \"{n}\" is lopsided: {}", h["warning"].as_str().unwrap_or(""));
        }
        Ok(())
    })??;
    Ok(())
}

/// "schema.name" as recorded (neither part has a dot: resolve() refuses such names), turned back
/// into a quoted, qualified name.
fn quote_qualified(key: &str) -> Sql {
    match key.split_once('.') {
        Some((s, n)) => Sql::qualified(s, n),
        None => Sql::ident(key),
    }
}

/// Free bytes on the file system of the data directory.
fn free_disk_bytes() -> Option<u64> {
    // SAFETY: statvfs writes into a zeroed struct of its own type; the path is a NUL-terminated
    // C string that lives through the call
    unsafe {
        let dir = pg_sys::DataDir;
        if dir.is_null() {
            return None;
        }
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(dir, &mut s) != 0 {
            return None;
        }
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
}
