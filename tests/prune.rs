//! Tier 4: vector prune, index health and maintenance, agent memory search, through a real
//! client against the cluster of scripts/cluster.sh (Supabase migrations applied: 384 dims).
//! Each test works on strategies of its own, so it never touches another test's rows.
//! Run by scripts/test.sh, single-threaded (two tests restart the server or kill the worker).

mod common;

use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn dims() -> i32 {
    let mut c = admin();
    c.query_one("select embedding_dims from quantops.settings", &[]).unwrap().get::<_, Option<i32>>(0).expect("configured")
}

/// A strategy name no other test uses.
fn strategy(tag: &str) -> String {
    format!("prune-{tag}-{}", &new_user()[..8])
}

/// Inserts `n` rows of `strat` with as_of = now() - (i * step), symbols cycling over `symbols`,
/// an embedding when `embed` (a deterministic direction per row, spread over the sphere).
/// Written with session_replication_role = replica, as a bulk load would be: the enqueue trigger
/// stays quiet, so the embedding worker never rewrites these test vectors underneath a test.
fn seed_rows(strat: &str, n: i64, step: &str, symbols: i32, embed: bool, owner: Option<&str>) {
    let mut c = admin();
    c.batch_execute("set session_replication_role = replica").unwrap();
    let d = dims();
    let sql = format!(
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, owner, embedding, embedder) \
         select $1, 'S' || (g % $3::int4), now() - g * $2::text::interval, $4::text::uuid, \
                case when $5 then (select array_agg(sin(g * 0.37 + k * (1 + g % 13)))::real[] from generate_series(1, {d}) k)::extensions.vector end, \
                case when $5 then 'test' end \
           from generate_series(1, $6::bigint) g"
    );
    c.execute(&sql, &[&strat, &step, &symbols, &owner, &embed, &n]).unwrap();
}

fn live(c: &mut postgres::Client, strat: &str) -> i64 {
    c.query_one("select count(*) from quantops.signal_embeddings where strategy = $1", &[&strat]).unwrap().get(0)
}

fn archived(c: &mut postgres::Client, strat: &str) -> i64 {
    c.query_one("select count(*) from quantops.signal_embeddings_archive where strategy = $1", &[&strat]).unwrap().get(0)
}

/// Every row of the strategy is in exactly one of the two tables.
fn both(c: &mut postgres::Client, strat: &str) -> i64 {
    c.query_one(
        "select count(*) from quantops.signal_embeddings s join quantops.signal_embeddings_archive a using (id) where s.strategy = $1",
        &[&strat],
    )
    .unwrap()
    .get(0)
}

/// A digest of the strategy's rows over both tables (every column the move carries).
fn digest(c: &mut postgres::Client, strat: &str) -> String {
    c.query_one(
        "select md5(string_agg(r, '|' order by r)) from ( \
           select concat_ws(',', id, strategy, symbol, as_of, features, series, rationale, tags, owner, embedding::text, \
                  embedder, embedder_version, input_hash, embedded_at, created_at, updated_at) r \
             from quantops.signal_embeddings where strategy = $1 \
           union all \
           select concat_ws(',', id, strategy, symbol, as_of, features, series, rationale, tags, owner, embedding::text, \
                  embedder, embedder_version, input_hash, embedded_at, created_at, updated_at) \
             from quantops.signal_embeddings_archive where strategy = $1) x",
        &[&strat],
    )
    .unwrap()
    .get::<_, Option<String>>(0)
    .unwrap_or_default()
}

fn policy_name(strat: &str) -> String {
    strat.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
}

fn set_age_policy(strat: &str, age: &str) -> String {
    let name = policy_name(strat);
    let mut c = admin();
    c.execute("select quantops.set_retention($1, 'max_age', strategy => $2, max_age => $3::text::interval)", &[&name, &strat, &age])
        .unwrap();
    name
}

fn db_err(r: Result<u64, postgres::Error>, state: &str, part: &str) {
    match r {
        Ok(_) => panic!("expected SQLSTATE {state} ({part}), got success"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("expected {state}, got {e}"));
            assert_eq!(db.code().code(), state, "wrong SQLSTATE for: {}", db.message());
            assert!(db.message().contains(part), "message {:?} lacks {:?}", db.message(), part);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Retention policies and bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn set_retention_rejects_bad_input_and_changes_nothing() {
    let s = strategy("bad");
    seed_rows(&s, 3, "1 day", 1, false, None);
    let mut c = admin();
    let before: i64 = c.query_one("select count(*) from quantops.retention_policies", &[]).unwrap().get(0);
    let cases: Vec<(&str, &str, &str)> = vec![
        // negative and zero ages: 22023 invalid_parameter_value
        ("select quantops.set_retention('x-neg', 'max_age', max_age => interval '-1 day')", "22023", "max_age must be a positive interval"),
        ("select quantops.set_retention('x-zero', 'max_age', max_age => interval '0')", "22023", "max_age must be a positive interval"),
        ("select quantops.set_retention('x-none', 'max_age')", "22023", "max_age must be a positive interval"),
        ("select quantops.set_retention('x-kn', 'keep_newest', keep_newest => -1)", "22023", "keep_newest must be zero or more"),
        ("select quantops.set_retention('x-kind', 'forever')", "22023", "unknown retention kind \"forever\""),
        (
            "select quantops.set_retention('x-mix', 'keep_newest', keep_newest => 3, max_age => interval '1 day')",
            "22023",
            "max_age applies only",
        ),
        ("select quantops.set_retention('x-ret', 'retired_strategy')", "22023", "needs a strategy"),
        // an unknown strategy: 42704 undefined_object
        (
            "select quantops.set_retention('x-unk', 'retired_strategy', strategy => 'no-such-strategy')",
            "42704",
            "strategy \"no-such-strategy\" does not exist",
        ),
        // hostile names never reach SQL text: 22023
        (
            "select quantops.set_retention('x\"; drop table quantops.jobs; --', 'max_age', max_age => interval '1 day')",
            "22023",
            "invalid retention policy name",
        ),
        ("select quantops.set_retention('', 'max_age', max_age => interval '1 day')", "22023", "invalid retention policy name"),
        // NULLs: 22004 null_value_not_allowed
        ("select quantops.set_retention(null, 'max_age', max_age => interval '1 day')", "22004", "must not be null"),
        ("select quantops.drop_retention('no-such-policy')", "42704", "retention policy \"no-such-policy\" does not exist"),
        ("select quantops.prune_batch(batch_size => 0)", "22023", "batch_size must be between 1 and 100000"),
        ("select quantops.prune_batch('no-such-policy')", "42704", "retention policy \"no-such-policy\" does not exist"),
        ("select * from quantops.prune_plan('no-such-policy')", "42704", "does not exist"),
        ("call quantops.prune(policy => 'no-such-policy')", "42704", "does not exist"),
        ("call quantops.prune(max_rows => 0)", "22023", "max_rows must be positive"),
        ("call quantops.prune(batch_size => -5)", "22023", "batch_size must be between 1 and 100000"),
        ("select quantops.restore_archived()", "22004", "give ids or reason"),
        ("select quantops.restore_archived(ids => array[1], max_rows => 0)", "22023", "max_rows must be between"),
    ];
    for (sql, state, part) in cases {
        db_err(c.execute(sql, &[]), state, part);
    }
    let after: i64 = c.query_one("select count(*) from quantops.retention_policies", &[]).unwrap().get(0);
    assert_eq!(before, after, "a refused call left a policy behind");
    assert!(c.query_one("select to_regclass('quantops.jobs') is not null", &[]).unwrap().get::<_, bool>(0));
    // a procedure that commits cannot run inside a transaction block: 2D000
    let mut tx = c.transaction().unwrap();
    let r = tx.execute("call quantops.prune(dry_run => false, policy => null, max_rows => 1)", &[]);
    db_err(r, "2D000", "invalid transaction termination");
}

#[test]
fn prune_moves_exactly_the_old_rows_in_batches_and_restore_brings_them_back() {
    let s = strategy("age");
    // 3,000 rows, one every 6 hours: 750 days back; older than 500 days: g >= 2000, 1,001 rows
    seed_rows(&s, 3000, "6 hours", 7, true, None);
    let mut c = admin();
    let before_digest = digest(&mut c, &s);
    let name = set_age_policy(&s, "500 days");
    // the dry run says what would move, and moves nothing
    let plan = c.query_one("select rows_to_move from quantops.prune_plan($1)", &[&name]).unwrap().get::<_, i64>(0);
    assert_eq!(plan, 1001);
    let r = c.query_one("call quantops.prune(dry_run => true, policy => $1)", &[&name]).unwrap();
    let report: serde_json::Value = r.get(0);
    assert_eq!(report["rows_to_move"], 1001);
    assert_eq!((live(&mut c, &s), archived(&mut c, &s)), (3000, 0));
    // the move, 300 rows a batch, each batch committed
    let r = c.query_one("call quantops.prune(batch_size => 150, policy => $1)", &[&name]).unwrap();
    let report: serde_json::Value = r.get(0);
    assert_eq!(report["moved"], 1001, "{report}");
    assert!(report["batches"].as_i64().unwrap() >= 7, "{report}");
    assert_eq!((live(&mut c, &s), archived(&mut c, &s), both(&mut c, &s)), (1999, 1001, 0));
    let young: i64 = c
        .query_one("select count(*) from quantops.signal_embeddings where strategy = $1 and as_of < now() - interval '500 days'", &[&s])
        .unwrap()
        .get(0);
    assert_eq!(young, 0, "an old row stayed behind");
    let reason: String =
        c.query_one("select distinct archive_reason from quantops.signal_embeddings_archive where strategy = $1", &[&s]).unwrap().get(0);
    assert_eq!(reason, format!("retention policy {name}"));
    // recorded in job_runs with the rows moved and the index's health before and after
    let run = report["run_id"].as_i64().unwrap();
    let (status, rows, details): (String, Option<i64>, serde_json::Value) = {
        let r = c.query_one("select status, rows, details from quantops.job_runs where id = $1", &[&run]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((status.as_str(), rows), ("succeeded", Some(1001)));
    assert!(details["health_before"]["lists"].as_i64().unwrap() >= 1, "{details}");
    assert!(details["health_after"]["rows"].is_number(), "{details}");
    // nothing changed on the way: the same rows, byte for byte, over the two tables
    assert_eq!(digest(&mut c, &s), before_digest);
    // a second run finds nothing
    let r = c.query_one("call quantops.prune(policy => $1)", &[&name]).unwrap();
    assert_eq!(r.get::<_, serde_json::Value>(0)["moved"], 0);
    // restore: every archived row comes back, with its id
    let back: i64 = c
        .query_one("select quantops.restore_archived(reason => $1, max_rows => 100000)", &[&format!("retention policy {name}")])
        .unwrap()
        .get(0);
    assert_eq!(back, 1001);
    assert_eq!((live(&mut c, &s), archived(&mut c, &s)), (3000, 0));
    assert_eq!(digest(&mut c, &s), before_digest);
    // a restore that would duplicate a live row's natural key moves nothing: 23505
    c.execute("select quantops._prune_start($1)", &[&name]).unwrap();
    c.execute("select quantops.prune_batch($1, 1)", &[&name]).unwrap();
    let moved_id: i64 = c.query_one("select id from quantops.signal_embeddings_archive where strategy = $1", &[&s]).unwrap().get(0);
    c.execute(
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, owner) \
         select strategy, symbol, as_of, owner from quantops.signal_embeddings_archive where id = $1",
        &[&moved_id],
    )
    .unwrap();
    let r = c.execute("select quantops.restore_archived(ids => array[$1::bigint])", &[&moved_id]);
    db_err(r, "23505", "duplicate key");
    assert_eq!(archived(&mut c, &s), 1, "the refused restore moved a row");
    c.execute("select quantops.drop_retention($1)", &[&name]).unwrap();
}

#[test]
fn keep_newest_and_retired_strategy_policies() {
    let s = strategy("newest");
    // 3 symbols x 10 rows
    seed_rows(&s, 30, "1 hour", 3, false, None);
    let mut c = admin();
    let name = policy_name(&s);
    c.execute("select quantops.set_retention($1, 'keep_newest', strategy => $2, keep_newest => 4)", &[&name, &s]).unwrap();
    let r = c.query_one("call quantops.prune(policy => $1, batch_size => 5)", &[&name]).unwrap();
    assert_eq!(r.get::<_, serde_json::Value>(0)["moved"], 18);
    // each symbol keeps exactly its 4 newest rows
    let rows = c
        .query(
            "select symbol, count(*), bool_and(as_of >= (select min(x) from (select as_of x from quantops.signal_embeddings_archive a \
               where a.strategy = s.strategy and a.symbol = s.symbol order by as_of desc limit 1) y)) \
             from quantops.signal_embeddings s where strategy = $1 group by symbol order by symbol",
            &[&s],
        )
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r.get::<_, i64>(1), 4);
        assert!(r.get::<_, bool>(2), "an archived row is newer than a kept one");
    }
    // retire the strategy: everything goes
    c.execute("select quantops.set_retention($1, 'retired_strategy', strategy => $2)", &[&format!("{name}-retired"), &s]).unwrap();
    let r = c.query_one("call quantops.prune(policy => $1)", &[&format!("{name}-retired")]).unwrap();
    assert_eq!(r.get::<_, serde_json::Value>(0)["moved"], 12);
    assert_eq!((live(&mut c, &s), archived(&mut c, &s), both(&mut c, &s)), (0, 30, 0));
    c.execute("select quantops.drop_retention($1)", &[&name]).unwrap();
    c.execute("select quantops.drop_retention($1)", &[&format!("{name}-retired")]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Concurrency and crashes
// ---------------------------------------------------------------------------------------------

#[test]
fn prune_while_inserts_and_searches_run() {
    let s = strategy("busy");
    seed_rows(&s, 4000, "6 hours", 5, true, None);
    let name = set_age_policy(&s, "500 days");
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicI64::new(0));
    let searches = Arc::new(AtomicI64::new(0));
    let d = dims();
    let ins = {
        let (stop, inserted, s) = (stop.clone(), inserted.clone(), s.clone());
        std::thread::spawn(move || {
            let mut c = admin();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                c.execute(
                    "insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) \
                     values ($1, 'NEW', now() + $2 * interval '1 second', $3::text::extensions.vector, 'test')",
                    &[&s, &(i as f64), &vec_lit(i as f32 * 0.01, d as usize)],
                )
                .expect("an insert failed during the prune");
                inserted.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let search = {
        let (stop, searches, s) = (stop.clone(), searches.clone(), s.clone());
        std::thread::spawn(move || {
            let mut c = admin();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let n: i64 = c
                    .query_one(
                        "select count(*) from quantops.match_signals($1::text::extensions.vector, 10, jsonb_build_object('strategy', $2::text))",
                        &[&vec_lit(0.3 + i as f32 * 0.001, d as usize), &s],
                    )
                    .expect("a search failed during the prune")
                    .get(0);
                assert_eq!(n, 10, "a filtered search returned too few rows");
                searches.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut c = admin();
    let r = c.query_one("call quantops.prune(policy => $1, batch_size => 100)", &[&name]).unwrap();
    let moved = r.get::<_, serde_json::Value>(0)["moved"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    ins.join().expect("inserter");
    search.join().expect("searcher");
    let n_ins = inserted.load(Ordering::Relaxed);
    assert!(n_ins > 0 && searches.load(Ordering::Relaxed) > 0, "the concurrent sessions did no work");
    assert_eq!(moved, 2001, "rows older than 500 days");
    assert_eq!(live(&mut c, &s) + archived(&mut c, &s), 4000 + n_ins);
    assert_eq!(both(&mut c, &s), 0);
    c.execute("select quantops.drop_retention($1)", &[&name]).unwrap();
}

fn scheduler_pid(c: &mut postgres::Client) -> Option<i32> {
    c.query_opt("select pid from pg_stat_activity where backend_type = 'quantops scheduler'", &[]).unwrap().map(|r| r.get(0))
}

#[test]
fn kill_9_of_the_worker_mid_prune_loses_nothing() {
    let s = strategy("kill");
    seed_rows(&s, 30000, "1 hour", 20, true, None);
    let mut c = admin();
    let total = live(&mut c, &s);
    let before_digest = digest(&mut c, &s);
    let name = set_age_policy(&s, "1 day");
    let to_move: i64 = c.query_one("select rows_to_move from quantops.prune_plan($1)", &[&name]).unwrap().get(0);
    // the worker's prune job, now
    c.execute("update quantops.jobs set next_run_at = now() where name = 'prune'", &[]).unwrap();
    c.execute("select quantops._wake_worker()", &[]).unwrap();
    let pid = wait_for("the worker to start moving rows", Duration::from_secs(60), || {
        let mut c = admin();
        (archived(&mut c, &s) > 0).then(|| scheduler_pid(&mut c)).flatten()
    });
    let mid = archived(&mut c, &s);
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    // the postmaster resets every backend; reconnect once it accepts connections again
    std::thread::sleep(Duration::from_secs(2));
    let mut c = admin();
    let (l, a) = (live(&mut c, &s), archived(&mut c, &s));
    eprintln!("killed the worker with {mid} of {to_move} rows archived; after recovery: {l} live, {a} archived");
    assert_eq!(l + a, total, "rows lost or duplicated by the crash");
    assert_eq!(both(&mut c, &s), 0);
    // the worker comes back; the next run resumes from the watermark and finishes
    wait_for("the worker to come back", Duration::from_secs(60), || scheduler_pid(&mut admin()));
    c.execute("update quantops.jobs set next_run_at = now() where name = 'prune'", &[]).unwrap();
    c.execute("select quantops._wake_worker()", &[]).unwrap();
    wait_for("the prune to finish", Duration::from_secs(120), || {
        let mut c = admin();
        (archived(&mut c, &s) == to_move).then_some(())
    });
    assert_eq!(live(&mut c, &s), total - to_move);
    assert_eq!(digest(&mut c, &s), before_digest);
    // the interrupted run is on record as such, the finished one as succeeded
    let interrupted: i64 = c
        .query_one("select count(*) from quantops.job_runs where job = 'prune' and status = 'failed' and error like 'interrupted%'", &[])
        .unwrap()
        .get(0);
    assert!(interrupted >= 1 || mid == to_move, "the killed run is not marked interrupted");
    c.execute("select quantops.drop_retention($1)", &[&name]).unwrap();
}

#[test]
fn fast_shutdown_while_the_worker_prunes_stops_cleanly() {
    let s = strategy("fast");
    seed_rows(&s, 30000, "1 hour", 20, true, None);
    let mut c = admin();
    let total = live(&mut c, &s);
    let name = set_age_policy(&s, "1 day");
    c.execute("update quantops.jobs set next_run_at = now() where name = 'prune'", &[]).unwrap();
    c.execute("select quantops._wake_worker()", &[]).unwrap();
    wait_for("the worker to start moving rows", Duration::from_secs(60), || {
        let mut c = admin();
        (archived(&mut c, &s) > 0).then_some(())
    });
    // SIGTERM reaches the worker in the middle of its job: it must stop after the batch in
    // flight, and the server with it (pg_ctl waits at most 60 s)
    let root = env!("CARGO_MANIFEST_DIR");
    let t0 = std::time::Instant::now();
    let st = Command::new("bash").arg(format!("{root}/scripts/cluster.sh")).args(["stop", "fast"]).status().unwrap();
    assert!(st.success(), "the server did not shut down: the worker ignored SIGTERM");
    eprintln!("fast shutdown took {:?}", t0.elapsed());
    let st = Command::new("bash").arg(format!("{root}/scripts/cluster.sh")).arg("start").status().unwrap();
    assert!(st.success());
    let mut c = admin();
    assert_eq!(live(&mut c, &s) + archived(&mut c, &s), total);
    assert_eq!(both(&mut c, &s), 0);
    c.execute("call quantops.prune(policy => $1)", &[&name]).unwrap();
    c.execute("select quantops.drop_retention($1)", &[&name]).unwrap();
}

#[test]
fn immediate_shutdown_mid_prune_loses_nothing() {
    let s = strategy("stop");
    seed_rows(&s, 30000, "1 hour", 20, true, None);
    let mut c = admin();
    let total = live(&mut c, &s);
    let before_digest = digest(&mut c, &s);
    let name = set_age_policy(&s, "1 day");
    let to_move: i64 = c.query_one("select rows_to_move from quantops.prune_plan($1)", &[&name]).unwrap().get(0);
    let pruner = {
        let name = name.clone();
        std::thread::spawn(move || {
            let mut c = admin();
            // the server goes away under it: an error here is expected
            let _ = c.query_one("call quantops.prune(policy => $1, batch_size => 100)", &[&name]);
        })
    };
    wait_for("the prune to start moving rows", Duration::from_secs(60), || {
        let mut c = admin();
        (archived(&mut c, &s) > 0).then_some(())
    });
    let root = env!("CARGO_MANIFEST_DIR");
    let st = Command::new("bash").arg(format!("{root}/scripts/cluster.sh")).args(["stop", "immediate"]).status().unwrap();
    assert!(st.success());
    let st = Command::new("bash").arg(format!("{root}/scripts/cluster.sh")).arg("start").status().unwrap();
    assert!(st.success());
    pruner.join().unwrap();
    let mut c = admin();
    let (l, a) = (live(&mut c, &s), archived(&mut c, &s));
    eprintln!("immediate shutdown with {a} of {to_move} rows archived");
    assert!(a < to_move, "the prune finished before the shutdown; the test proves nothing");
    assert_eq!(l + a, total, "rows lost or duplicated by the shutdown");
    assert_eq!(both(&mut c, &s), 0);
    // the interrupted run resumes from its watermark
    let r = c.query_one("call quantops.prune(policy => $1, batch_size => 1000)", &[&name]).unwrap();
    assert_eq!(r.get::<_, serde_json::Value>(0)["moved"].as_i64().unwrap(), to_move - a);
    assert_eq!((live(&mut c, &s), archived(&mut c, &s)), (total - to_move, to_move));
    assert_eq!(digest(&mut c, &s), before_digest);
    c.execute("select quantops.drop_retention($1)", &[&name]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Agent memory search
// ---------------------------------------------------------------------------------------------

#[test]
fn match_signals_under_rls_with_filters_and_no_look_ahead() {
    let s = strategy("mem");
    let d = dims() as usize;
    seed_rows(&s, 600, "1 hour", 6, true, Some(USER_A));
    seed_rows(&s, 600, "1 hour 1 second", 6, true, Some(USER_B));
    let mut c = admin();
    // ten rows of a rare symbol among the many: a filtered search still returns ten
    c.batch_execute("set session_replication_role = replica").unwrap();
    c.execute(
        "update quantops.signal_embeddings set symbol = 'RARE' where id in \
           (select id from quantops.signal_embeddings where strategy = $1 and owner = $2::text::uuid order by id desc limit 10)",
        &[&s, &USER_A],
    )
    .unwrap();
    let (qid, q): (i64, String) = {
        let r = c
            .query_one(
                "select id, embedding::text from quantops.signal_embeddings where strategy = $1 and owner = $2::text::uuid order by id limit 1 offset 17",
                &[&s, &USER_A],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let a = Who::User(USER_A.into());
    let call = "select id, strategy, symbol, signal_as_of, similarity, distance from quantops.match_signals($1::text::extensions.vector, $2, $3::jsonb, $4)";
    let f = serde_json::json!({ "strategy": s });
    let rows = request(&a, call, &[&q, &10i32, &f, &None::<std::time::SystemTime>]).unwrap();
    assert_eq!(rows.len(), 10);
    // the nearest is the row itself; only the caller's rows; ordered by distance
    assert_eq!(rows[0].get::<_, i64>(0), qid);
    assert!(rows[0].get::<_, f64>(4) > 0.9999);
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let foreign: i64 = c
        .query_one("select count(*) from quantops.signal_embeddings where id = any($1) and owner <> $2::text::uuid", &[&ids, &USER_A])
        .unwrap()
        .get(0);
    assert_eq!(foreign, 0, "user A saw user B's rows");
    let dist: Vec<f64> = rows.iter().map(|r| r.get(5)).collect();
    assert!(dist.windows(2).all(|w| w[0] <= w[1]), "{dist:?}");
    // a filter on a rare symbol still returns match_count rows (iterative scan)
    let f = serde_json::json!({ "strategy": s, "symbol": ["RARE"] });
    let rows = request(&a, call, &[&q, &10i32, &f, &None::<std::time::SystemTime>]).unwrap();
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r.get::<_, String>(2) == "RARE"));
    // as_of: nothing the backtest could not have known (signal as_of after the cut)
    let cut = std::time::SystemTime::now() - Duration::from_secs(200 * 3600);
    let f = serde_json::json!({ "strategy": s });
    let rows = request(&a, call, &[&q, &50i32, &f, &Some(cut)]).unwrap();
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().all(|r| r.get::<_, std::time::SystemTime>(3) <= cut));
    // user B gets only B's rows for the same query
    let rows = request(&Who::User(USER_B.into()), call, &[&q, &10i32, &f, &None::<std::time::SystemTime>]).unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!ids.contains(&qid));
    // anon may not search at all
    expect_err(request(&Who::Anon, call, &[&q, &10i32, &f, &None::<std::time::SystemTime>]), "42501", "permission denied");
    // bad input, each with its SQLSTATE
    let short = vec_lit(0.5, 3);
    expect_err(
        request(&a, call, &[&short, &10i32, &f, &None::<std::time::SystemTime>]),
        "22000",
        &format!("query_embedding has 3 dimensions, not {d}"),
    );
    expect_err(
        request(&a, call, &[&None::<String>, &10i32, &f, &None::<std::time::SystemTime>]),
        "22004",
        "query_embedding must not be null",
    );
    expect_err(request(&a, call, &[&q, &0i32, &f, &None::<std::time::SystemTime>]), "22023", "match_count must be between 1 and 1000");
    let bad = serde_json::json!({ "owner": "x" });
    expect_err(request(&a, call, &[&q, &5i32, &bad, &None::<std::time::SystemTime>]), "22023", "unknown filter key \"owner\"");
    let bad = serde_json::json!({ "strategy": 7 });
    expect_err(request(&a, call, &[&q, &5i32, &bad, &None::<std::time::SystemTime>]), "22023", "must be a string or an array of strings");
    let bad = serde_json::json!(["strategy"]);
    expect_err(request(&a, call, &[&q, &5i32, &bad, &None::<std::time::SystemTime>]), "22023", "filter must be a JSON object");
    // NaN never reaches us: pgvector refuses it in the literal (22000)
    let mut nan = vec_lit(0.5, d);
    nan = nan.replacen("0.", "NaN,0.", 1);
    let r = request(&a, call, &[&nan, &5i32, &f, &None::<std::time::SystemTime>]);
    assert!(matches!(sqlstate(&r).as_deref(), Some("22000") | Some("22P02")), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Index health and maintenance
// ---------------------------------------------------------------------------------------------

#[test]
fn index_health_measures_and_refuses_what_it_cannot_measure() {
    let mut c = admin();
    let logged: i64 = c.query_one("select count(*) from quantops.index_health_log", &[]).unwrap().get(0);
    let h: serde_json::Value = c.query_one("select quantops.index_health(recall => true, queries => 20)", &[]).unwrap().get(0);
    assert_eq!(h["index"], "quantops.signal_embeddings_embedding_ivfflat_idx");
    assert!(h["lists"].as_i64().unwrap() >= 1);
    assert!(h["balance"].as_f64().unwrap() >= 1.0, "{h}");
    assert!(h["mean_distance"].as_f64().unwrap() >= 0.0, "{h}");
    assert!(h["drift"].is_number(), "{h}");
    let r = &h["recall"];
    let rec = r["recall"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rec), "{h}");
    assert!(r["ci95"][0].as_f64().unwrap() <= rec && rec <= r["ci95"][1].as_f64().unwrap(), "{h}");
    // the ladder ends at the first probes that reach the target, or at lists
    let ladder = r["ladder"].as_array().unwrap();
    let last = ladder.last().unwrap();
    match r["probes_for_target"].as_i64() {
        Some(p) => {
            assert_eq!(last["probes"].as_i64(), Some(p));
            assert!(last["recall"].as_f64().unwrap() >= r["target"].as_f64().unwrap());
            let sp: Option<i32> = c.query_one("select search_probes from quantops.settings", &[]).unwrap().get(0);
            assert_eq!(sp, Some(p as i32), "match_signals' probes were not updated");
        }
        None => assert_eq!(last["probes"].as_i64(), h["lists"].as_i64()),
    }
    let logged2: i64 = c.query_one("select count(*) from quantops.index_health_log", &[]).unwrap().get(0);
    assert_eq!(logged2, logged + 1, "the measurement was not recorded");
    // what it refuses, with SQLSTATEs
    let cases: Vec<(&str, &str, &str)> = vec![
        ("select quantops.index_health('quantops.backtest_results')", "42704", "table \"quantops.backtest_results\" has no IVFFlat index"),
        ("select quantops.index_health('quantops.signal_embeddings_pkey')", "42809", "is not an IVFFlat index"),
        ("select quantops.index_health('quantops.no_such_table')", "42P01", "does not exist"),
        ("select quantops.index_health(recall => true, k => 0)", "22023", "invalid k"),
        ("select quantops.index_health(sample_rows => 5)", "22023", "invalid sample_rows"),
        ("select quantops.index_health(recall => true, target_recall => 1.5)", "22023", "invalid target_recall"),
        ("select quantops.maintain_index('quantops.jobs')", "42704", "has no IVFFlat index"),
    ];
    for (sql, state, part) in cases {
        db_err(c.execute(sql, &[]), state, part);
    }
    // a table the caller may not read: 42501
    c.batch_execute("create table if not exists public.qo_secret_vectors (id int, v extensions.vector(3)); \
                     create index if not exists qo_secret_vectors_idx on public.qo_secret_vectors using ivfflat (v extensions.vector_l2_ops) with (lists = 1); \
                     revoke all on public.qo_secret_vectors from service_role")
        .unwrap();
    let r = request(&Who::ServiceRole, "select quantops.index_health('public.qo_secret_vectors')", &[]);
    expect_err(r, "42501", "permission denied for table");
    // any IVFFlat index, not only quantops' own: a table with one is measured through it
    let h: serde_json::Value =
        c.query_one("select quantops.index_health('public.qo_secret_vectors', sample_rows => 100)", &[]).unwrap().get(0);
    assert_eq!(h["index"], "public.qo_secret_vectors_idx");
    assert_eq!(h["metric"], "l2");
    c.batch_execute("drop table public.qo_secret_vectors").unwrap();
}

#[test]
fn maintain_index_rebuilds_concurrently_through_the_worker_and_writes_go_on() {
    let mut c = admin();
    let d = dims() as usize;
    let old: i64 =
        c.query_one("select pg_relation_filenode('quantops.signal_embeddings_embedding_ivfflat_idx')::bigint", &[]).unwrap().get(0);
    // an INVALID IVFFlat index, as a failed concurrent build leaves one
    c.batch_execute(
        "create index qo_leftover_ivfflat on quantops.signal_embeddings using ivfflat (embedding extensions.vector_cosine_ops) with (lists = 1); \
         update pg_index set indisvalid = false where indexrelid = 'quantops.qo_leftover_ivfflat'::regclass",
    )
    .unwrap();
    // dry run: the plan, no request
    let p: serde_json::Value = c.query_one("select quantops.maintain_index(force => true, dry_run => true)", &[]).unwrap().get(0);
    assert!(p["request_id"].is_null(), "{p}");
    assert!(p["statements"][0].as_str().unwrap().contains("concurrently"), "{p}");
    let p: serde_json::Value = c.query_one("select quantops.maintain_index(force => true)", &[]).unwrap().get(0);
    let id = p["request_id"].as_i64().expect("a queued rebuild");
    // a second request while one is pending is the same request
    let p2: serde_json::Value = c.query_one("select quantops.maintain_index(force => true)", &[]).unwrap().get(0);
    assert_eq!(p2["request_id"].as_i64(), Some(id));
    // writes go on while the worker rebuilds
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicI64::new(0));
    let s = strategy("rebuild");
    let w = {
        let (stop, during, s) = (stop.clone(), during.clone(), s.clone());
        std::thread::spawn(move || {
            let mut c = admin();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                c.execute(
                    "insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) values ($1, 'W', now() + $2 * interval '1 ms', $3::text::extensions.vector, 'test')",
                    &[&s, &(i as f64), &vec_lit(i as f32 * 0.001, d)],
                )
                .expect("a write failed during the rebuild");
                let running: bool =
                    c.query_one("select exists (select 1 from quantops.index_builds where status = 'running')", &[]).unwrap().get(0);
                if running {
                    during.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let (status, err): (String, Option<String>) = wait_for("the worker to run the rebuild", Duration::from_secs(300), || {
        let r = admin().query_one("select status, error from quantops.index_builds where id = $1", &[&id]).unwrap();
        let st: String = r.get(0);
        (st == "succeeded" || st == "failed").then(|| (st, r.get(1)))
    });
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    assert_eq!(status, "succeeded", "{err:?}");
    let new: i64 =
        c.query_one("select pg_relation_filenode('quantops.signal_embeddings_embedding_ivfflat_idx')::bigint", &[]).unwrap().get(0);
    assert_ne!(old, new, "the index was not rebuilt");
    let (valid, leftover): (bool, bool) = {
        let r = c
            .query_one(
                "select indisvalid, to_regclass('quantops.qo_leftover_ivfflat') is not null from pg_index \
                 where indexrelid = 'quantops.signal_embeddings_embedding_ivfflat_idx'::regclass",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(valid);
    assert!(!leftover, "the invalid index left by a failed build was not dropped");
    let after: serde_json::Value = c.query_one("select health_after from quantops.index_builds where id = $1", &[&id]).unwrap().get(0);
    assert!(after["drift"].as_f64().unwrap() < 1.15, "{after}");
    assert_eq!(after["baseline"], "measured after build");
    eprintln!("{} writes committed while the rebuild ran", during.load(Ordering::Relaxed));
    // the scheduled job does the same on its own and records itself
    // a run that starts after this point (one that was already under way, say after a restart made
    // the job due, measured before the rebuild finished)
    let since: String = c.query_one("select clock_timestamp()::text", &[]).unwrap().get(0);
    c.execute("update quantops.jobs set next_run_at = now() where name = 'maintain-index'", &[]).unwrap();
    c.execute("select quantops._wake_worker()", &[]).unwrap();
    let details: serde_json::Value = wait_for("the maintain-index job", Duration::from_secs(120), || {
        admin()
            .query_opt(
                "select details from quantops.job_runs where job = 'maintain-index' and status = 'succeeded' \
                 and started_at > $1::text::timestamptz order by id desc limit 1",
                &[&since],
            )
            .unwrap()
            .map(|r| r.get(0))
    });
    assert!(details["health"]["lists"].is_number(), "{details}");
    // right after a rebuild, no new one is needed, or it waits for min_interval
    assert!(details["rebuild"] == false, "the job wants another rebuild right after one: {details}");
}
