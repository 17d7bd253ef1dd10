//! Hot standby: a streaming replica (`scripts/cluster.sh replica`, pg_basebackup -R) of the
//! Supabase-shaped cluster, quantops preloaded on both. On the replica every read RPC works, as
//! PostgREST would call it; every writing RPC fails with 25006 and a hint to call the primary; a
//! flag changed on the primary is seen by a replica session (with its cache) once replayed; the
//! worker waits while in recovery and takes over within seconds of a promotion.
//! Runs in name order (the promotion last); each run starts the replica afresh.

mod common;

use common::*;
use postgres::Client;
use std::process::Command;
use std::time::Duration;

fn replica_port() -> u16 {
    std::env::var("QUANTOPS_REPLICA_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(port() + 3)
}

fn cluster(args: &[&str]) {
    let ok = Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh")).args(args).status().unwrap();
    assert!(ok.success(), "scripts/cluster.sh {args:?}");
}

fn replica(user: &str) -> Client {
    connect_to(replica_port(), user)
}

/// Waits until the replica has replayed everything the primary has written so far.
fn caught_up() {
    let lsn: String = admin().query_one("select pg_current_wal_lsn()::text", &[]).unwrap().get(0);
    wait_for("the replica to replay the primary's WAL", Duration::from_secs(30), || {
        let ok: bool = replica("supabase_admin").query_one("select pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn]).unwrap().get(0);
        ok.then_some(())
    });
}

/// A fresh replica of the primary as it is now (once per test binary: the promotion test ends it).
fn fresh_replica() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut a = admin();
        a.batch_execute(
            "select quantops.set_artifact_check('off'); \
             select quantops.set_flag('standby.flag', '{\"environments\": {\"production\": true}}'); \
             select quantops.set_flag('standby.cache', '{\"environments\": {\"production\": true}}');",
        )
        .unwrap();
        let m: i64 = a.query_one("select count(*) from quantops.models where name = 'standby-model'", &[]).unwrap().get(0);
        if m == 0 {
            a.batch_execute(
                "select quantops.create_model('standby-model'); select quantops.register_model_version('standby-model'); \
                 select quantops.promote('standby-model', 1, 'production', null);",
            )
            .unwrap();
        }
        // the seed's signals embedded, so memory search has rows
        wait_for("an empty embedding backlog", Duration::from_secs(120), || {
            let n: i64 = admin().query_one("select backlog from quantops.embedding_status", &[]).unwrap().get(0);
            (n == 0).then_some(())
        });
        cluster(&["replica", "reset"]);
        caught_up();
    });
}

#[test]
fn a_flag_change_on_the_primary_is_seen_on_the_replica_once_replayed() {
    fresh_replica();
    // one replica session, as anon, keeps its compiled flags between calls
    let mut r = replica("authenticator");
    let on = |r: &mut Client| -> bool {
        let mut tx = r.transaction().unwrap();
        tx.execute("select set_config('role', 'anon', true), set_config('request.jwt.claims', '{\"role\":\"anon\"}', true)", &[]).unwrap();
        let v: bool = tx.query_one("select quantops.flag_enabled('standby.cache')", &[]).unwrap().get(0);
        tx.commit().unwrap();
        v
    };
    assert!(on(&mut r));
    admin().batch_execute("select quantops.kill_flag('standby.cache')").unwrap();
    caught_up();
    assert!(!on(&mut r), "the replica's session kept a flag killed on the primary");
    admin().batch_execute("select quantops.kill_flag('standby.cache', false)").unwrap();
    caught_up();
    assert!(on(&mut r), "the replica's session missed the flag turned back on");
}

#[test]
fn a_replica_serves_every_read_and_refuses_every_write() {
    fresh_replica();
    let port = replica_port();
    let user = Who::User(USER_A.into());
    let svc = Who::ServiceRole;
    let in_recovery: bool = replica("supabase_admin").query_one("select pg_is_in_recovery()", &[]).unwrap().get(0);
    assert!(in_recovery);
    // bars on the primary, replayed: a sweep that records nothing runs on the replica
    admin()
        .batch_execute(
            "insert into quantops.bars (symbol, ts, open, high, low, close) \
             select 'STBY', timestamptz '2020-01-01' + g * interval '1 day', 100 + sin(g), 102 + sin(g), 98 + sin(g), 100 + sin(g) \
             from generate_series(1, 60) g on conflict do nothing",
        )
        .unwrap();
    caught_up();
    let dims: i32 = admin().query_one("select embedding_dims from quantops.settings", &[]).unwrap().get(0);
    let q = format!("array_fill(0.1::real, array[{dims}])::extensions.vector");
    let signal: i64 = admin()
        .query_one("select id from quantops.signal_embeddings where owner = $1::text::uuid and embedding is not null limit 1", &[&USER_A])
        .unwrap()
        .get(0);
    // reads, each as the role an application would use
    let reads: Vec<(Who, String)> = vec![
        (user.clone(), format!("select count(*) from quantops.match_signals({q}, 5)")),
        (user.clone(), format!("select count(*) from quantops.embedding_asof({signal}, now())")),
        (Who::Anon, "select quantops.flag_enabled('standby.flag')::text".into()),
        (Who::Anon, "select value::text from quantops.evaluate_flag('standby.flag')".into()),
        (user.clone(), "select quantops.require_flag('standby.flag')::text".into()),
        (user.clone(), "select count(*) from quantops.discover()".into()),
        (user.clone(), "select quantops.alias_asof('standby-model', 'production')::text".into()),
        (user.clone(), "select sharpe from quantops.backtest_metrics(array[0.01, -0.02, 0.03, 0.01])".into()),
        (svc.clone(), "select quantops.status()->>'standby'".into()),
        (svc.clone(), "select bool_and(valid)::text from quantops.verify_audit()".into()),
        (svc.clone(), "select count(*) from quantops.prune_plan()".into()),
        (svc.clone(), "select backlog from quantops.embedding_status".into()),
        (user.clone(), "select count(*) from quantops.signal_embeddings".into()),
        (
            user.clone(),
            "select count(*) from quantops.run_backtest_grid('breakout', array['STBY'], '{\"window\": [5, 10]}', keep => 'none')".into(),
        ),
    ];
    for (who, sql) in &reads {
        let r = request_on(port, who, sql, &[]);
        assert!(r.is_ok(), "{} on the replica: {sql}: {:?}", who.label(), r.err());
    }
    let standby: String = request_on(port, &svc, "select quantops.status()->>'standby'", &[]).unwrap()[0].get(0);
    assert_eq!(standby, "true");
    let found: i64 = request_on(port, &user, &format!("select count(*) from quantops.match_signals({q}, 5)"), &[]).unwrap()[0].get(0);
    assert_eq!(found, 5, "memory search on the replica");
    // writes: every writing RPC, as a role that may call it, fails with 25006 and says where to go
    let writes: Vec<(Who, &str)> = vec![
        (svc.clone(), "select quantops.set_flag('standby.x', '{\"environments\": {\"production\": true}}')"),
        (svc.clone(), "select quantops.kill_flag('standby.flag')"),
        (svc.clone(), "select quantops.drop_flag('standby.flag')"),
        (svc.clone(), "select quantops.set_retention('standby', 'max_age', max_age => interval '10 years')"),
        (svc.clone(), "select quantops.drop_retention('standby')"),
        (svc.clone(), "select quantops.prune_batch()"),
        (svc.clone(), "select quantops.restore_archived(ids => array[1::bigint])"),
        (svc.clone(), "select quantops.create_model('standby-new')"),
        (user.clone(), "select quantops.run_backtest('breakout', array['STBY'], '{\"window\": 5}')"),
        (user.clone(), "select count(*) from quantops.run_backtest_grid('breakout', array['STBY'], '{\"window\": [5, 10]}')"),
        (svc.clone(), "select quantops.register_model_version('standby-model')"),
        (svc.clone(), "select quantops.promote('standby-model', 1, 'canary', null)"),
        (svc.clone(), "select quantops.rollback('standby-model', 'production')"),
        (svc.clone(), "select quantops.set_promotion_policy('standby-model', 'production', min_sharpe => 1)"),
        (Who::Postgres, "select quantops.set_artifact_check('storage')"),
        (svc.clone(), "select count(*) from quantops.consume_events('standby')"),
        (svc.clone(), "select quantops.ack_event(1, 'standby')"),
        (svc.clone(), "select quantops.record_backtest('standby-run', 's', '2025-01-01', '2026-01-01')"),
        (user.clone(), "select quantops.log_tool_call('standby')"),
        (svc.clone(), "select quantops.log_flow_run('standby')"),
        (svc.clone(), "select quantops.run_job('verify-audit')"),
        (svc.clone(), "select quantops.register_embedder('standby', 'features', 8, '{}')"),
        (svc.clone(), "select quantops.set_embedder('signal-features')"),
        (svc.clone(), "select * from quantops.refresh_embeddings()"),
        (svc.clone(), "select quantops.sweep_embeddings()"),
        (svc.clone(), "select quantops.retry_failed()"),
        (svc.clone(), "select quantops.index_health()"),
        (svc.clone(), "select quantops.maintain_index(dry_run => true)"),
        (Who::Postgres, "select quantops.configure(dims => 384)"),
        (svc.clone(), "call quantops.prune()"),
    ];
    for (who, sql) in &writes {
        let r = request_on(port, who, sql, &[]);
        let e = match r {
            Ok(_) => panic!("{} on the replica: {sql} succeeded", who.label()),
            Err(e) => e,
        };
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "25006", "{sql}: {}", db.message());
        assert!(db.message().contains("on a read replica"), "{sql}: {}", db.message());
        assert!(db.hint().unwrap_or("").contains("call it on the primary"), "{sql}: no hint");
    }
    // the list is every writing function: any other volatile function granted to an API role
    // would be missed here
    let volatile: Vec<String> = admin()
        .query(
            "select p.proname::text from pg_proc p where p.pronamespace = 'quantops'::regnamespace and p.provolatile = 'v' \
             and p.prorettype <> 'trigger'::regtype and p.proname not like '\\_%' \
             and (has_function_privilege('service_role', p.oid, 'EXECUTE') or has_function_privilege('postgres', p.oid, 'EXECUTE')) \
             order by 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for f in &volatile {
        let listed = writes.iter().any(|(_, sql)| sql.contains(&format!("quantops.{f}(")));
        // evaluate_flag is volatile for its sampled exposures, which a read-only transaction skips
        assert!(listed || f == "evaluate_flag", "volatile function {f} is not in the replica's write list");
    }
    // the worker waits: no scheduler process while in recovery
    let workers: i64 = replica("supabase_admin")
        .query_one("select count(*) from pg_stat_activity where backend_type = 'quantops scheduler'", &[])
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "a scheduler runs on the standby");
}

#[test]
fn after_promotion_the_worker_takes_over_within_seconds() {
    fresh_replica();
    let t0 = std::time::Instant::now();
    cluster(&["replica", "promote"]);
    let took = wait_for("the promoted server's scheduler heartbeat", Duration::from_secs(30), || {
        let mut r = replica("supabase_admin");
        let beat: Option<bool> = r
            .query_opt(
                "select heartbeat_at > now() - interval '10 seconds' from quantops.workers where name = 'quantops scheduler' \
                 and pid = (select pid from pg_stat_activity where backend_type = 'quantops scheduler')",
                &[],
            )
            .unwrap()
            .map(|row| row.get(0));
        beat.filter(|b| *b).map(|_| t0.elapsed())
    });
    assert!(took < Duration::from_secs(10), "the worker took {took:?} after the promotion");
    // now a primary: status says so, and writes work there
    let standby: String = request_on(replica_port(), &Who::ServiceRole, "select quantops.status()->>'standby'", &[]).unwrap()[0].get(0);
    assert_eq!(standby, "false");
    let r = request_on(replica_port(), &Who::ServiceRole, "select quantops.log_flow_run('after-promotion')", &[]);
    assert!(r.is_ok(), "{r:?}");
    eprintln!("the promoted server's worker beat {took:?} after pg_ctl promote");
    cluster(&["replica", "stop"]);
}
