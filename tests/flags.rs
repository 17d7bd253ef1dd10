//! Tier 4: feature flags through a real client against the cluster of scripts/cluster.sh:
//! Unleash-compatible bucketing through SQL, targeting, kill switch, environments, the cache
//! across two sessions, use inside an RLS policy, the audit trail, bad input.

mod common;

use common::*;

fn key(tag: &str) -> String {
    format!("test.{tag}.{}", &new_user()[..8])
}

fn set_flag(c: &mut postgres::Client, k: &str, def: serde_json::Value) {
    c.execute("select quantops.set_flag($1, $2)", &[&k, &def]).unwrap();
}

fn enabled(c: &mut postgres::Client, k: &str, ctx: serde_json::Value) -> bool {
    c.query_one("select quantops.flag_enabled($1, $2)", &[&k, &ctx]).unwrap().get(0)
}

#[test]
fn bucketing_matches_unleash() {
    // Unleash's normalizedValue("123", "gr1") = 73 and ("999", "groupX") = 25
    // (unleash-client-node's own tests): in at 73 %, out at 72 %
    let mut c = admin();
    for (user, group, bucket) in [("123", "gr1", 73), ("999", "groupX", 25)] {
        for (pct, want) in [(bucket, true), (bucket - 1, false)] {
            let k = key("bucket");
            set_flag(
                &mut c,
                &k,
                serde_json::json!({"environments": {"production": true},
                    "rules": [{"rollout": {"percentage": pct, "stickiness": "user_id", "group_id": group}}]}),
            );
            assert_eq!(enabled(&mut c, &k, serde_json::json!({"user_id": user})), want, "{user} {group} at {pct} %");
            // a number in the context hashes as its text, as the SDKs do with an id
            let n: i64 = user.parse().unwrap();
            assert_eq!(enabled(&mut c, &k, serde_json::json!({"userId": n})), want);
        }
    }
    // 25 % of 20,000 users, evaluated in SQL, as the demo's query does
    let k = key("quarter");
    set_flag(
        &mut c,
        &k,
        serde_json::json!({"environments": {"production": true}, "rules": [{"rollout": {"percentage": 25, "stickiness": "user_id"}}]}),
    );
    let n: i64 = c
        .query_one(
            "select count(*) from generate_series(1, 20000) g where quantops.flag_enabled($1, jsonb_build_object('user_id', g))",
            &[&k],
        )
        .unwrap()
        .get(0);
    assert!((4600..=5400).contains(&n), "{n} of 20000 in a 25 % rollout");
    // and the same users as the pure Rust evaluator would pick: the bucket of user 17
    let v: bool = c.query_one("select quantops.flag_enabled($1, '{\"user_id\": \"17\"}')", &[&k]).unwrap().get(0);
    let v2: bool = c.query_one("select quantops.flag_enabled($1, '{\"user_id\": 17}')", &[&k]).unwrap().get(0);
    assert_eq!(v, v2, "an id as string and as number are the same user");
    // every function reads a number the same way: 20.0 is the user "20" for all of them
    for ctx in ["{\"user_id\": 20.0}", "{\"user_id\": 20}", "{\"user_id\": \"20\"}"] {
        let r = c
            .query_one(
                "select quantops.flag_enabled($1, $2::text::jsonb), (select value from quantops.evaluate_flag($1, $2::text::jsonb))",
                &[&k, &ctx],
            )
            .unwrap();
        let (a, b): (bool, bool) = (r.get(0), r.get(1));
        assert_eq!(a, b, "flag_enabled and evaluate_flag disagree on {ctx}");
        let base: bool = c.query_one("select quantops.flag_enabled($1, '{\"user_id\": \"20\"}')", &[&k]).unwrap().get(0);
        assert_eq!(a, base, "{ctx} is not the user \"20\"");
    }
}

#[test]
fn targeting_reasons_variants_kill_switch_environments() {
    let mut c = admin();
    let k = key("momentum");
    set_flag(
        &mut c,
        &k,
        serde_json::json!({
        "description": "momentum v2",
        "environments": {"production": true, "staging": true},
        "rules": [
            {"name": "desk", "constraints": [{"attribute": "role", "op": "in", "values": ["desk", "admin"]},
                                              {"attribute": "app_version", "op": "semver_gte", "value": "2.1.0"}],
             "variants": [{"name": "aggressive", "weight": 1, "payload": {"leverage": 2}}]},
            {"name": "big-books", "constraints": [{"attribute": "aum", "op": "num_gt", "value": 1000000}]}
        ]}),
    );
    let ev = |c: &mut postgres::Client,
              ctx: serde_json::Value|
     -> (bool, Option<String>, Option<serde_json::Value>, String, Option<String>, Option<i32>) {
        let r = c
            .query_one("select value, variant, payload, reason, error_code, rule from quantops.evaluate_flag($1, $2)", &[&k, &ctx])
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    };
    let r = ev(&mut c, serde_json::json!({"role": "desk", "app_version": "2.10.0"}));
    assert_eq!((r.0, r.1.as_deref(), r.3.as_str(), r.5), (true, Some("aggressive"), "TARGETING_MATCH", Some(1)));
    assert_eq!(r.2, Some(serde_json::json!({"leverage": 2})));
    // semver: 2.1.0-rc.1 < 2.1.0
    assert_eq!(ev(&mut c, serde_json::json!({"role": "desk", "app_version": "2.1.0-rc.1"})).3, "DEFAULT");
    let r = ev(&mut c, serde_json::json!({"role": "viewer", "aum": 5000000}));
    assert_eq!((r.0, r.3.as_str(), r.5), (true, "TARGETING_MATCH", Some(2)));
    assert_eq!(ev(&mut c, serde_json::json!({"role": "viewer", "aum": 10})).3, "DEFAULT");
    // an unknown flag never raises: the default with ERROR / FLAG_NOT_FOUND
    let r = c.query_one("select value, reason, error_code from quantops.evaluate_flag('no.such.flag', '{}')", &[]).unwrap();
    assert_eq!(
        (r.get::<_, bool>(0), r.get::<_, String>(1), r.get::<_, Option<String>>(2)),
        (false, "ERROR".into(), Some("FLAG_NOT_FOUND".into()))
    );
    let r = c.query_one("select reason, error_code from quantops.evaluate_flag($1, '[1, 2]')", &[&k]).unwrap();
    assert_eq!((r.get::<_, String>(0), r.get::<_, Option<String>>(1)), ("ERROR".into(), Some("INVALID_CONTEXT".into())));
    assert!(!enabled(&mut c, "no.such.flag", serde_json::json!({})));
    // a flag without rules: STATIC
    let s = key("static");
    set_flag(&mut c, &s, serde_json::json!({"environments": {"production": true}}));
    assert_eq!(c.query_one("select reason from quantops.evaluate_flag($1)", &[&s]).unwrap().get::<_, String>(0), "STATIC");
    // environments: off in local, on in staging (quantops.environment, set per session by a superuser)
    c.batch_execute("set quantops.environment = 'local'").unwrap();
    assert_eq!(ev(&mut c, serde_json::json!({"role": "desk", "app_version": "3.0.0"})).3, "DISABLED");
    c.batch_execute("set quantops.environment = 'staging'").unwrap();
    assert!(ev(&mut c, serde_json::json!({"role": "desk", "app_version": "3.0.0"})).0);
    c.batch_execute("reset quantops.environment").unwrap();
    // a bad environment name is refused by PostgreSQL itself
    let e = c.batch_execute("set quantops.environment = 'prod'").unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22023");
    // the kill switch overrides everything
    c.execute("select quantops.kill_flag($1)", &[&k]).unwrap();
    let r = ev(&mut c, serde_json::json!({"role": "desk", "app_version": "3.0.0"}));
    assert_eq!((r.0, r.3.as_str()), (false, "DISABLED"));
    // require_flag: 55000 with the reason
    let e = c.query_one("select quantops.require_flag($1, '{\"role\": \"desk\"}')", &[&k]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert!(db.message().contains(&format!("flag \"{k}\" is off for role \"desk\": DISABLED")), "{}", db.message());
    c.execute("select quantops.kill_flag($1, false)", &[&k]).unwrap();
    let ok: bool =
        c.query_one("select quantops.require_flag($1, '{\"role\": \"desk\", \"app_version\": \"2.1.0\"}')", &[&k]).unwrap().get(0);
    assert!(ok);
    // every change audited with before and after
    let r = c
        .query(
            "select action, detail->'before'->'kill_switch', detail->'after'->'kill_switch' from quantops.audit_log \
             where args->>'key' = $1 order by seq",
            &[&k],
        )
        .unwrap();
    let got: Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)> =
        r.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, "flag_insert");
    assert_eq!((got[1].1.clone(), got[1].2.clone()), (None, Some(serde_json::json!(true))));
    assert_eq!((got[2].1.clone(), got[2].2.clone()), (Some(serde_json::json!(true)), Some(serde_json::json!(false))));
}

#[test]
fn the_cache_follows_commits_across_sessions() {
    let k = key("cache");
    let mut a = admin();
    let mut b = admin();
    set_flag(&mut a, &k, serde_json::json!({"environments": {"production": true}}));
    assert!(enabled(&mut a, &k, serde_json::json!({})));
    assert!(enabled(&mut b, &k, serde_json::json!({})), "b caches it as on");
    let mut tx = b.transaction().unwrap();
    tx.execute("select quantops.kill_flag($1)", &[&k]).unwrap();
    // b's transaction sees its own change at once
    assert!(!tx.query_one("select quantops.flag_enabled($1)", &[&k]).unwrap().get::<_, bool>(0));
    // a does not, before the commit
    assert!(enabled(&mut a, &k, serde_json::json!({})), "a saw an uncommitted change");
    tx.commit().unwrap();
    // ... and does at its next statement after it
    assert!(!enabled(&mut a, &k, serde_json::json!({})), "a still sees the old flag after the commit");
    // a rolled back change is never seen, and leaves no stale cache in the writer
    let mut tx = b.transaction().unwrap();
    tx.execute("select quantops.kill_flag($1, false)", &[&k]).unwrap();
    assert!(tx.query_one("select quantops.flag_enabled($1)", &[&k]).unwrap().get::<_, bool>(0));
    tx.rollback().unwrap();
    assert!(!enabled(&mut b, &k, serde_json::json!({})));
    assert!(!enabled(&mut a, &k, serde_json::json!({})));
    // a dropped flag is unknown everywhere after the commit
    b.execute("select quantops.drop_flag($1)", &[&k]).unwrap();
    let r = a.query_one("select reason, error_code from quantops.evaluate_flag($1)", &[&k]).unwrap();
    assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("FLAG_NOT_FOUND"));
}

#[test]
fn a_flag_gates_rows_in_an_rls_policy() {
    let k = key("rls");
    let mut c = admin();
    // user A is in the rollout's targeting, user B is not
    set_flag(
        &mut c,
        &k,
        serde_json::json!({"environments": {"production": true},
            "rules": [{"constraints": [{"attribute": "user_id", "op": "in", "values": [USER_A]}]}]}),
    );
    let table = format!("gated_{}", &new_user()[..8]);
    c.batch_execute(&format!(
        "create table public.{table} (id int primary key, strategy text); \
         insert into public.{table} values (1, 'momentum_v2'), (2, 'carry_fx'); \
         alter table public.{table} enable row level security; \
         create policy gated on public.{table} for select to authenticated \
           using (strategy <> 'momentum_v2' or quantops.flag_enabled('{k}', jsonb_build_object('user_id', auth.uid()))); \
         grant select on public.{table} to authenticated"
    ))
    .unwrap();
    let sql = format!("select count(*) from public.{table}");
    let a = request(&Who::User(USER_A.into()), &sql, &[]).unwrap();
    let b = request(&Who::User(USER_B.into()), &sql, &[]).unwrap();
    assert_eq!((a[0].get::<_, i64>(0), b[0].get::<_, i64>(0)), (2, 1));
    // the kill switch takes the gated rows away from everyone, in the same snapshot as the data
    c.execute("select quantops.kill_flag($1)", &[&k]).unwrap();
    let a = request(&Who::User(USER_A.into()), &sql, &[]).unwrap();
    assert_eq!(a[0].get::<_, i64>(0), 1);
    // anon and authenticated may evaluate, not write
    expect_err(
        request(&Who::User(USER_A.into()), "select quantops.set_flag('x.y', '{\"environments\": {}}')", &[]),
        "42501",
        "permission denied",
    );
    let r = request(&Who::Anon, "select quantops.flag_enabled($1)", &[&k]).unwrap();
    assert!(!r[0].get::<_, bool>(0));
    c.batch_execute(&format!("drop table public.{table}")).unwrap();
}

#[test]
fn bad_definitions_get_22023_and_change_nothing() {
    let mut c = admin();
    let k = key("bad");
    set_flag(&mut c, &k, serde_json::json!({"environments": {"production": true}}));
    let before: serde_json::Value = c.query_one("select definition from quantops.flags where key = $1", &[&k]).unwrap().get(0);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!({"environments": {"prod": true}}), "unknown environment \"prod\""),
        (
            serde_json::json!({"environments": {"production": true}, "rules": [{"constraints": [{"attribute": "role", "op": "like", "values": ["x"]}]}]}),
            "rule 1 constraint 1: unknown op \"like\"",
        ),
        (
            serde_json::json!({"environments": {"production": true}, "rules": [{"rollout": {"percentage": 120}}]}),
            "rule 1 rollout: percentage 120 not in 0..100",
        ),
        (
            serde_json::json!({"environments": {"production": true}, "rules": [{"variants": [{"name": "a", "weight": 0}]}]}),
            "variant weights must sum to more than 0",
        ),
        (
            serde_json::json!({"environments": {"production": true}, "rules": [{"constraints": [{"attribute": "v", "op": "semver_gt", "value": "two"}]}]}),
            "invalid semver \"two\"",
        ),
        (
            serde_json::json!({"environments": {"production": true}, "rules": [{"constraints": [{"attribute": "n", "op": "num_gt", "value": "x"}]}]}),
            "must be a number",
        ),
        (serde_json::json!({"environments": {"production": true}, "surprise": 1}), "unknown key \"surprise\""),
        (serde_json::json!({"rules": []}), "missing \"environments\""),
        (serde_json::json!([1]), "must be a json object"),
        (
            serde_json::json!({"environments": {"production": true}, "rules": [{"rollout": {"percentage": 10, "stickiness": "random"}}]}),
            "stickiness \"random\" is not supported",
        ),
    ];
    for (def, part) in cases {
        let e = c.query_one("select quantops.set_flag($1, $2)", &[&k, &def]).unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023", "{}", db.message());
        assert!(db.message().contains(part), "{:?} lacks {part:?}", db.message());
    }
    // a direct write by the owner is validated too
    let e = c.execute("update quantops.flags set definition = '{\"environments\": {\"qa\": true}}' where key = $1", &[&k]).unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22023");
    for (sql, state, part) in [
        ("select quantops.set_flag(null, '{}')", "22004", "must not be null"),
        ("select quantops.set_flag('Bad Key', '{\"environments\": {}}')", "22023", "invalid flag key"),
        ("select quantops.kill_flag('no.such.flag')", "42704", "flag \"no.such.flag\" does not exist"),
        ("select quantops.drop_flag('no.such.flag')", "42704", "does not exist"),
    ] {
        let e = c.query_one(sql, &[]).unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), state, "{}", db.message());
        assert!(db.message().contains(part), "{:?} lacks {part:?}", db.message());
    }
    let after: serde_json::Value = c.query_one("select definition from quantops.flags where key = $1", &[&k]).unwrap().get(0);
    assert_eq!(before, after);
    assert!(enabled(&mut c, &k, serde_json::json!({})));
}

#[test]
fn exposures_are_sampled_when_asked() {
    let mut c = admin();
    let k = key("exposure");
    set_flag(
        &mut c,
        &k,
        serde_json::json!({"environments": {"production": true},
            "rules": [{"rollout": {"percentage": 100, "stickiness": "user_id"}, "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}]}),
    );
    c.batch_execute(&format!("select * from quantops.evaluate_flag('{k}', '{{\"user_id\": \"u1\"}}')")).unwrap();
    let n: i64 = c.query_one("select count(*) from quantops.flag_exposures where flag_key = $1", &[&k]).unwrap().get(0);
    assert_eq!(n, 0, "logged with the sample rate at 0");
    c.batch_execute("set quantops.flag_exposure_sample = 1").unwrap();
    for u in ["u1", "u2", "u3"] {
        c.execute("select * from quantops.evaluate_flag($1, jsonb_build_object('user_id', $2::text))", &[&k, &u]).unwrap();
    }
    let rows =
        c.query("select context->>'user_id', variant, reason from quantops.flag_exposures where flag_key = $1 order by id", &[&k]).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert!(matches!(r.get::<_, Option<String>>(1).as_deref(), Some("a") | Some("b")));
        assert_eq!(r.get::<_, String>(2), "SPLIT");
    }
    // the same user always gets the same variant
    let v1: Option<String> = c.query_one("select variant from quantops.evaluate_flag($1, '{\"user_id\": \"u1\"}')", &[&k]).unwrap().get(0);
    assert_eq!(v1, rows[0].get::<_, Option<String>>(1));
}
