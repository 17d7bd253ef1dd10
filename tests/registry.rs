//! Tier 4: the model registry (gated compare-and-set promotion, history, rollback, outbox) and
//! backtest writes, through a real client against the cluster of scripts/cluster.sh, with
//! requests replayed as PostgREST makes them. Each test uses models of its own.

mod common;

use common::*;
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A model name no other test uses.
fn model(tag: &str) -> String {
    format!("{tag}-{}", &new_user()[..8])
}

fn sql_err(r: Result<Vec<postgres::Row>, postgres::Error>, state: &str, part: &str) {
    expect_err(r, state, part)
}

/// The artifact of a version, where the Storage API would put it.
fn upload(c: &mut postgres::Client, m: &str, v: i32) {
    c.execute(
        "insert into storage.objects (bucket_id, name) values ('model-artifacts', $1)",
        &[&format!("backtests/{m}/{v}/manifest.json")],
    )
    .unwrap();
}

fn backtest(c: &mut postgres::Client, run: &str, m: &str, v: i32, sharpe: f64, mdd: f64, trades: i32) {
    c.execute(
        "select quantops.record_backtest($1, 'registry-test', '2025-01-01', '2025-12-31', sharpe => $2, \
           max_drawdown => $3, trades => $4, model => $5, model_version => $6)",
        &[&run, &sharpe, &mdd, &trades, &m, &v],
    )
    .unwrap();
}

/// A model with versions 1 and 2, both uploaded and backtested (1 good, 2 better).
fn two_versions(tag: &str) -> String {
    let m = model(tag);
    let mut c = admin();
    c.execute("select quantops.create_model($1, description => 'a test model')", &[&m]).unwrap();
    for v in 1..=2 {
        let got: i32 = c.query_one("select quantops.register_model_version($1)", &[&m]).unwrap().get(0);
        assert_eq!(got, v);
        upload(&mut c, &m, v);
        backtest(&mut c, &format!("{m}-bt{v}"), &m, v, 1.0 + v as f64 * 0.5, 0.1, 200);
    }
    m
}

#[test]
fn promote_rollback_and_history() {
    let m = two_versions("flow");
    let mut c = admin();
    c.execute(
        "select quantops.set_promotion_policy($1, 'production', min_sharpe => 1.2, max_drawdown => 0.2, min_trades => 100, \
           max_backtest_age => interval '7 days')",
        &[&m],
    )
    .unwrap();
    let sr = Who::ServiceRole;
    // the flow promotes v2 to production (nothing there yet: expected_current null)
    let r = request(&sr, "select quantops.promote($1, 2, 'production', null)", &[&m]).unwrap();
    let out: serde_json::Value = r[0].get(0);
    assert_eq!(out["version"], 2);
    let t_v2: std::time::SystemTime = c.query_one("select clock_timestamp()", &[]).unwrap().get(0);
    std::thread::sleep(Duration::from_millis(20));
    // v1 takes it back through the same checks, then rollback returns to v2
    request(&sr, "select quantops.promote($1, 1, 'production', 2)", &[&m]).unwrap();
    let r = request(&sr, "select quantops.rollback($1, 'production')", &[&m]).unwrap();
    assert_eq!(r[0].get::<_, serde_json::Value>(0)["version"], 2);
    // history: three ranges, contiguous, none overlapping, the last one open
    let rows = c
        .query(
            "select h.version, h.reason, lower(h.valid) = lag(upper(h.valid)) over (order by lower(h.valid)), upper_inf(h.valid) \
             from quantops.alias_history h join quantops.models m on m.id = h.model_id where m.name = $1 order by lower(h.valid)",
            &[&m],
        )
        .unwrap();
    let got: Vec<(i32, Option<String>, Option<bool>, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        got,
        vec![
            (2, Some("promote".into()), None, false),
            (1, Some("promote".into()), Some(true), false),
            (2, Some("rollback".into()), Some(true), true)
        ]
    );
    // what was production at T: one query
    let at: Option<i32> = c.query_one("select quantops.alias_asof($1, 'production', $2)", &[&m, &t_v2]).unwrap().get(0);
    assert_eq!(at, Some(2));
    let before: Option<i32> = c.query_one("select quantops.alias_asof($1, 'production', now() - interval '1 day')", &[&m]).unwrap().get(0);
    assert_eq!(before, None);
    // the history cannot be rewritten: Supabase's postgres has no grant to write it, and not even
    // the table's owner (the superuser) gets past the append-only trigger
    let rewrite = "update quantops.alias_history set version = 1 where alias = 'production' and model_id = (select id from quantops.models where name = $1)";
    sql_err(request(&Who::Postgres, rewrite, &[&m]), "42501", "permission denied");
    let mut owner = admin();
    let e = owner.execute(rewrite, &[&m]).unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"));
    assert!(e.as_db_error().unwrap().message().contains("append-only"), "{e}");
    // three events for flows, each consumed exactly once: lease, ack, never again
    let consumer = format!("flow-{m}");
    let evs =
        request(&sr, "select id, payload from quantops.consume_events($1, 1000) where payload->>'model' = $2", &[&consumer, &m]).unwrap();
    assert_eq!(evs.len(), 3);
    for e in &evs {
        let id: i64 = e.get(0);
        let r = request(&sr, "select quantops.ack_event($1, $2)", &[&id, &consumer]).unwrap();
        assert!(r[0].get::<_, bool>(0));
        // a retried ack changes nothing
        let r = request(&sr, "select quantops.ack_event($1, $2)", &[&id, &consumer]).unwrap();
        assert!(!r[0].get::<_, bool>(0));
    }
    let again =
        request(&sr, "select count(*) from quantops.consume_events($1, 1000) where payload->>'model' = $2", &[&consumer, &m]).unwrap();
    assert_eq!(again[0].get::<_, i64>(0), 0);
    // and an audit row for each move
    let n: i64 =
        c.query_one("select count(*) from quantops.audit_log where action = 'alias_moved' and args->>'model' = $1", &[&m]).unwrap().get(0);
    assert_eq!(n, 3);
    // agents discover what is promoted (a shared model: every authenticated user sees it)
    let r = request(
        &Who::User(USER_A.into()),
        "select version, artifact_prefix from quantops.discover(alias => 'production') where model = $1",
        &[&m],
    )
    .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].get::<_, i32>(0), 2);
    assert_eq!(r[0].get::<_, String>(1), format!("backtests/{m}/2/"));
}

#[test]
fn every_gate_says_what_is_wrong() {
    let m = two_versions("gates");
    let mut c = admin();
    c.execute(
        "select quantops.set_promotion_policy($1, 'champion', min_sharpe => 3, max_drawdown => 0.05, min_trades => 500, \
           max_backtest_age => interval '1 microsecond', min_hit_rate => 0.9)",
        &[&m],
    )
    .unwrap();
    let r = request(&Who::ServiceRole, "select quantops.promote($1, 2, 'champion', null)", &[&m]);
    let e = r.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23514");
    let msg = db.message();
    for part in [
        "sharpe 2 of backtest",
        "is below the minimum 3",
        "max drawdown 0.1 of backtest",
        "is above the maximum 0.05",
        "200 trades in backtest",
        "the minimum is 500",
        "hit rate null",
        "older than the maximum age",
    ] {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
    // no artifact in storage: its own message
    let m2 = model("noartifact");
    c.execute("select quantops.create_model($1)", &[&m2]).unwrap();
    c.execute("select quantops.register_model_version($1)", &[&m2]).unwrap();
    sql_err(
        request(&Who::ServiceRole, "select quantops.promote($1, 1, 'staging', null)", &[&m2]),
        "23514",
        &format!("no artifact under model-artifacts/backtests/{m2}/1/ in storage.objects"),
    );
    // no backtest while the policy needs one
    c.execute("select quantops.set_promotion_policy($1, 'staging', min_sharpe => 0)", &[&m2]).unwrap();
    upload(&mut c, &m2, 1);
    sql_err(request(&Who::ServiceRole, "select quantops.promote($1, 1, 'staging', null)", &[&m2]), "23514", "has no backtest");
    // neither service_role nor the owner moves an alias past the gates with a direct write
    request(&Who::ServiceRole, "select quantops.promote($1, 2, 'production', null)", &[&m]).unwrap();
    c.execute("select quantops.set_promotion_policy($1, 'production', min_sharpe => 1.8)", &[&m]).unwrap();
    for who in [Who::ServiceRole, Who::Postgres] {
        let r = request(
            &who,
            "update quantops.model_aliases set version = 1 where alias = 'production' and model_id = (select id from quantops.models where name = $1)",
            &[&m],
        );
        sql_err(r, "23514", "sharpe 1.5 of backtest");
        let r = request(
            &who,
            "insert into quantops.model_aliases (model_id, alias, version) select id, 'champion', 1 from quantops.models where name = $1",
            &[&m],
        );
        sql_err(r, "23514", "may not take alias \"champion\"");
    }
    // not even with triggers switched off for replication
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("set local session_replication_role = replica").unwrap();
    let r = tx.execute(
        "insert into quantops.model_aliases (model_id, alias, version) select id, 'champion', 1 from quantops.models where name = $1",
        &[&m],
    );
    let e = r.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "23514");
    drop(tx);
    let cur: i32 = c
        .query_one("select a.version from quantops.model_aliases a join quantops.models m on m.id = a.model_id where m.name = $1 and a.alias = 'production'", &[&m])
        .unwrap()
        .get(0);
    assert_eq!(cur, 2, "a refused write moved the alias");
}

#[test]
fn fifty_concurrent_promotions_one_winner() {
    let m = two_versions("race");
    let mut c = admin();
    c.execute("select quantops.promote($1, 1, 'production', null)", &[&m]).unwrap();
    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (m, barrier) = (m.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = admin();
                let target = 2i32;
                barrier.wait();
                // all 50 expect version 1 and promote version 2: exactly one can win
                let r = c.query_one("select quantops.promote($1, $2, 'production', 1)", &[&m, &target]);
                (target, r.map(|_| ()).map_err(|e| e.as_db_error().map(|d| (d.code().code().to_string(), d.message().to_string()))))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = results.iter().filter(|(t, r)| *t == 2 && r.is_ok()).count();
    let lost: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert_eq!(wins, 1, "{results:?}");
    for (_, r) in &lost {
        let (code, msg) = r.as_ref().unwrap_err().as_ref().expect("a database error");
        assert_eq!(code, "40001", "{msg}");
        assert!(msg.contains("points at version 2, not version 1"), "{msg}");
    }
    assert_eq!(lost.len(), n - 1);
    let rows = c
        .query(
            "select h.version from quantops.alias_history h join quantops.models m on m.id = h.model_id \
             where m.name = $1 order by lower(h.valid)",
            &[&m],
        )
        .unwrap();
    let hist: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(hist, vec![1, 2], "history has exactly the one move");
    let cur: i32 = c
        .query_one("select a.version from quantops.model_aliases a join quantops.models m on m.id = a.model_id where m.name = $1", &[&m])
        .unwrap()
        .get(0);
    assert_eq!(cur, 2);
}

#[test]
fn concurrent_registration_numbers_versions_without_gaps() {
    let m = model("reg");
    admin().execute("select quantops.create_model($1)", &[&m]).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || admin().query_one("select quantops.register_model_version($1)", &[&m]).unwrap().get::<_, i32>(0))
        })
        .collect();
    let mut got: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, (1..=16).collect::<Vec<_>>());
}

#[test]
fn bad_input_gets_its_sqlstate_and_changes_nothing() {
    let m = two_versions("bad");
    let mut c = admin();
    let before: i64 = c.query_one("select count(*) from quantops.backtest_results", &[]).unwrap().get(0);
    let sr = Who::ServiceRole;
    let cases: Vec<(String, &str, &str)> = vec![
        ("select quantops.promote('no-such-model', 1, 'production', null)".into(), "42704", "model \"no-such-model\" does not exist"),
        (format!("select quantops.promote('{m}', 99, 'production', null)"), "42704", "version 99 of model"),
        (format!("select quantops.promote('{m}', 1, 'Prod Uction', null)"), "22023", "invalid alias"),
        (format!("select quantops.promote('{m}', null, 'production', null)"), "22004", "must not be null"),
        ("select quantops.register_model_version('no-such-model')".into(), "42704", "does not exist"),
        (format!("select quantops.register_model_version('{m}', manifest_sha256 => 'xyz')"), "22023", "manifest_sha256 must be 64"),
        (format!("select quantops.register_model_version('{m}', artifact_prefix => '../etc/')"), "22023", "invalid artifact_prefix"),
        ("select quantops.create_model('Bad Name')".into(), "22023", "invalid model name"),
        ("select quantops.create_model('x', kind => 'rocket')".into(), "22023", "unknown kind"),
        (format!("select quantops.rollback('{m}', 'production')"), "42704", "alias \"production\" of model"),
        (format!("select quantops.record_backtest('{m}-nan', 's', '2025-01-01', '2025-02-01', sharpe => 'NaN')"), "22023", "sharpe must be a finite number"),
        (format!("select quantops.record_backtest('{m}-inf', 's', '2025-01-01', '2025-02-01', cagr => '-Infinity')"), "22023", "cagr must be a finite number"),
        (format!("select quantops.record_backtest('{m}-dd', 's', '2025-01-01', '2025-02-01', max_drawdown => 1.5)"), "22023", "max_drawdown must be between 0 and 1"),
        (format!("select quantops.record_backtest('{m}-per', 's', '2025-02-01', '2025-01-01')"), "22023", "period_end must be after period_start"),
        (format!("select quantops.record_backtest('{m}-mv', 's', '2025-01-01', '2025-02-01', model => '{m}', model_version => 42)"), "42704", "version 42 of model"),
        (format!("select quantops.record_backtest('{m}-bt1', 'registry-test', '2025-01-01', '2025-12-31', sharpe => 9, max_drawdown => 0.1, trades => 200, model => '{m}', model_version => 1)"), "23505", "was recorded with different content"),
        ("select quantops.record_backtest(null, 's', '2025-01-01', '2025-02-01')".into(), "22004", "must not be null"),
        ("select * from quantops.backtest_metrics(array[0.01, 'NaN'])".into(), "22023", "returns[2] is not a finite number"),
        ("select * from quantops.backtest_metrics(array[]::float8[])".into(), "22023", "returns must not be empty"),
        ("select * from quantops.backtest_metrics(array[-1.5])".into(), "22023", "cannot be below -1"),
        (format!("select quantops.set_promotion_policy('{m}', 'production', max_drawdown => 2)"), "22023", "max_drawdown must be between 0 and 1"),
        (format!("select quantops.set_promotion_policy('{m}', 'production', min_sharpe => 'NaN')"), "22023", "must be finite"),
        ("select quantops.consume_events('', 1)".into(), "22023", "consumer must be a name"),
        ("select quantops.artifacts_to_delete(interval '-1 day')".into(), "22023", "keep must be"),
    ];
    for (sql, state, part) in &cases {
        sql_err(request(&sr, sql, &[]), state, part);
    }
    // a retried record_backtest with the same content returns the same row and changes nothing
    let r = request(
        &sr,
        "select quantops.record_backtest($1, 'registry-test', '2025-01-01', '2025-12-31', sharpe => 1.5, max_drawdown => 0.1, trades => 200, model => $2, model_version => 1)",
        &[&format!("{m}-bt1"), &m],
    )
    .unwrap();
    let out: serde_json::Value = r[0].get(0);
    assert_eq!(out["created"], false);
    let after: i64 = c.query_one("select count(*) from quantops.backtest_results", &[]).unwrap().get(0);
    assert_eq!(before, after, "a refused or retried write changed the backtests");
    let versions: i64 = c
        .query_one("select count(*) from quantops.model_versions v join quantops.models m on m.id = v.model_id where m.name = $1", &[&m])
        .unwrap()
        .get(0);
    assert_eq!(versions, 2, "a refused registration left a version");
    // agents may not promote or write backtests
    let a = Who::User(USER_A.into());
    sql_err(request(&a, "select quantops.promote($1, 1, 'production', null)", &[&m]), "42501", "permission denied");
    sql_err(request(&a, "select quantops.record_backtest('x', 's', '2025-01-01', '2025-02-01')", &[]), "42501", "permission denied");
    sql_err(request(&a, "update quantops.model_aliases set version = 1", &[]), "42501", "permission denied");
}

#[test]
fn artifacts_to_delete_keeps_what_an_alias_points_at_or_did_recently() {
    let m = two_versions("dual");
    let mut c = admin();
    let v3: i32 = c.query_one("select quantops.register_model_version($1)", &[&m]).unwrap().get(0);
    upload(&mut c, &m, v3);
    c.execute("select quantops.promote($1, 1, 'production', null)", &[&m]).unwrap();
    c.execute("select quantops.promote($1, 2, 'production', 1)", &[&m]).unwrap();
    // keep = 0: only what no alias points at now is listed; v2 is production, v1 was
    let rows = c.query("select version, artifact_prefix from quantops.artifacts_to_delete(interval '0') where model = $1", &[&m]).unwrap();
    let vs: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(vs, vec![1, 3]);
    assert_eq!(rows[0].get::<_, String>(1), format!("backtests/{m}/1/"));
    // keep = 1 day: v1 pointed at minutes ago and v3 is new, so nothing yet
    let n: i64 = c.query_one("select count(*) from quantops.artifacts_to_delete(interval '1 day') where model = $1", &[&m]).unwrap().get(0);
    assert_eq!(n, 0);
    // quantops never deletes storage objects itself
    let objs: i64 = c.query_one("select count(*) from storage.objects where name like 'backtests/' || $1 || '/%'", &[&m]).unwrap().get(0);
    assert_eq!(objs, 3);
}

#[test]
fn backtest_metrics_agree_with_the_reference() {
    // series A of tests/reference/backtest_metrics.py, through SQL
    let r = admin()
        .query_one(
            "select n, sharpe, sortino, max_drawdown, cagr, volatility, hit_rate from quantops.backtest_metrics(\
               array[0.01, -0.02, 0.015, 0.003, -0.007, 0.012, -0.001, 0.0, 0.02, -0.011])",
            &[],
        )
        .unwrap();
    let want = [2.668198364292049, 4.411654680816154, 0.020000000000000018, 0.6669196289601884, 0.1983360784123756, 0.5];
    assert_eq!(r.get::<_, i32>(0), 10);
    for (i, w) in want.iter().enumerate() {
        let got: f64 = r.get(i + 1);
        assert!((got - w).abs() < 1e-12, "column {} = {got}, reference {w}", i + 1);
    }
}
