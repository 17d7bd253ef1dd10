//! Tier 4: integration tests through a real client against the cluster of scripts/cluster.sh,
//! with the Supabase migrations applied. Requests are replayed as PostgREST makes them.
//! Run by scripts/test.sh (single-threaded: some tests change server settings).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn who_all() -> Vec<Who> {
    vec![Who::Anon, Who::User(USER_A.into()), Who::User(USER_B.into()), Who::ServiceRole, Who::Postgres]
}

fn dims() -> usize {
    let mut c = admin();
    let d: Option<i32> = c.query_one("select embedding_dims from quantops.settings", &[]).unwrap().get(0);
    d.expect("the Supabase migration configures the dimension") as usize
}

// ---------------------------------------------------------------------------------------------
// The role matrix: every table and every function, for anon, two users, service_role, postgres
// ---------------------------------------------------------------------------------------------

/// Which roles may SELECT from each table, and whose rows they see.
#[derive(Clone, Copy, PartialEq, Debug)]
enum See {
    Denied,
    Own,
    All,
}

fn table_select_rules() -> BTreeMap<&'static str, [See; 3]> {
    // [anon, authenticated, service_role]; postgres sees all of everything
    use See::*;
    BTreeMap::from([
        ("signal_embeddings", [Denied, Own, All]),
        ("signal_embeddings_archive", [Denied, Own, All]),
        ("backtest_results", [Denied, Own, All]),
        ("audit_log", [Denied, Own, All]),
        ("settings", [Denied, All, All]),
        ("jobs", [Denied, Denied, All]),
        ("job_runs", [Denied, Denied, All]),
        ("workers", [Denied, Denied, All]),
        ("audit_heads", [Denied, Denied, All]),
        ("embedders", [Denied, Denied, All]),
        ("embedding_queue", [Denied, Denied, All]),
        ("embedding_failures", [Denied, Denied, All]),
        ("signal_embedding_history", [Denied, Own, All]),
        ("retention_policies", [Denied, Denied, All]),
        ("prune_state", [Denied, Denied, All]),
        ("index_builds", [Denied, Denied, All]),
        ("index_health_log", [Denied, Denied, All]),
        ("index_policy", [Denied, Denied, All]),
        ("models", [Denied, Own, All]),
        ("model_versions", [Denied, Own, All]),
        ("model_aliases", [Denied, Own, All]),
        ("alias_history", [Denied, Own, All]),
        ("promotion_policies", [Denied, Denied, All]),
        ("outbox", [Denied, Denied, All]),
        ("flags", [Denied, Denied, All]),
        ("flag_exposures", [Denied, Denied, All]),
        ("routine_grants", [Denied, Denied, All]),
        ("bars", [Denied, Own, All]),
        ("target_weights", [Denied, Own, All]),
        ("backtest_schedules", [Denied, Denied, All]),
    ])
}

#[test]
fn role_matrix_covers_every_table_and_rls_is_on() {
    let mut c = admin();
    let rows = c
        .query(
            "select c.relname::text, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'quantops' and c.relkind in ('r', 'p') order by 1",
            &[],
        )
        .unwrap();
    let tables: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let expected: BTreeSet<String> = table_select_rules().keys().map(|s| s.to_string()).collect();
    assert_eq!(tables, expected, "a table was added without a row in the role matrix");
    for r in &rows {
        let (t, rls): (String, bool) = (r.get(0), r.get(1));
        assert!(rls, "row level security is off on quantops.{t}");
    }
}

#[test]
fn role_matrix_select_on_every_table() {
    // rows owned by A and by B, written by the owner as postgres would (a flow with the service key)
    let mut c = admin();
    let tag = new_user();
    for owner in [USER_A, USER_B] {
        c.execute(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, owner) values ('matrix', $1, now(), $2::text::uuid)",
            &[&tag, &owner],
        )
        .unwrap();
        c.execute(
            "insert into quantops.backtest_results (run_id, strategy, period_start, period_end, owner) \
             values ($1 || $2, 'matrix', '2024-01-01', '2024-12-31', $2::text::uuid)",
            &[&tag, &owner],
        )
        .unwrap();
    }
    for who in who_all() {
        for (table, rules) in table_select_rules() {
            let sql = format!("select count(*) from quantops.{table}");
            let r = request(&who, &sql, &[]);
            let rule = match &who {
                Who::Anon => rules[0],
                Who::User(_) => rules[1],
                Who::ServiceRole => rules[2],
                Who::Postgres => See::All,
            };
            match rule {
                See::Denied => assert_eq!(sqlstate(&r).as_deref(), Some("42501"), "{} select {table}", who.label()),
                _ => assert!(r.is_ok(), "{} select {table}: {:?}", who.label(), r.err()),
            }
        }
        // row visibility on owned tables
        let seen = |t: &str| -> Option<i64> {
            let sql = match t {
                "signal_embeddings" => "select count(*) from quantops.signal_embeddings where symbol = $1",
                _ => "select count(*) from quantops.backtest_results where run_id like $1 || '%'",
            };
            request(&who, sql, &[&tag]).ok().map(|r| r[0].get::<_, i64>(0))
        };
        let want = match &who {
            Who::Anon => None,
            Who::User(_) => Some(1),
            Who::ServiceRole | Who::Postgres => Some(2),
        };
        assert_eq!(seen("signal_embeddings"), want, "{} rows of signal_embeddings", who.label());
        assert_eq!(seen("backtest_results"), want, "{} rows of backtest_results", who.label());
    }
    // each user sees exactly their own rows, never the other's
    for (me, other) in [(USER_A, USER_B), (USER_B, USER_A)] {
        let r = request(
            &Who::User(me.into()),
            "select count(*) filter (where owner::text = $2), count(*) filter (where owner::text <> $2) \
             from quantops.signal_embeddings where symbol = $1",
            &[&tag, &other],
        )
        .unwrap();
        assert_eq!((r[0].get::<_, i64>(0), r[0].get::<_, i64>(1)), (0, 1));
    }
}

#[test]
fn role_matrix_writes() {
    let d = dims();
    let tag = new_user();
    let a = Who::User(USER_A.into());
    let b = Who::User(USER_B.into());
    let v = vec_lit(0.3, d);
    // a user inserts a row: its owner defaults to auth.uid()
    let r = request(
        &a,
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) \
         values ('matrix', $1, now(), $2::text::extensions.vector, 'external') returning owner::text",
        &[&tag, &v],
    )
    .unwrap();
    assert_eq!(r[0].get::<_, String>(0), USER_A);
    // ... and cannot insert a row for someone else: RLS WITH CHECK, 42501
    let r = request(
        &a,
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, owner) values ('matrix', $1, now(), $2::text::uuid)",
        &[&tag, &USER_B],
    );
    expect_err(r, "42501", "row-level security");
    // the other user can neither see, update nor delete it
    let r = request(&b, "update quantops.signal_embeddings set rationale = 'x' where symbol = $1 returning id", &[&tag]).unwrap();
    assert!(r.is_empty());
    let r = request(&b, "delete from quantops.signal_embeddings where symbol = $1 returning id", &[&tag]).unwrap();
    assert!(r.is_empty());
    // the owner may update it, but not give it away
    let r = request(&a, "update quantops.signal_embeddings set rationale = 'mine' where symbol = $1 returning id", &[&tag]).unwrap();
    assert_eq!(r.len(), 1);
    let r = request(&a, "update quantops.signal_embeddings set owner = $2::text::uuid where symbol = $1", &[&tag, &USER_B]);
    expect_err(r, "42501", "row-level security");
    // anon writes nothing
    let r = request(&Who::Anon, "insert into quantops.signal_embeddings (strategy, symbol, as_of) values ('m', 'x', now())", &[]);
    expect_err(r, "42501", "permission denied");
    // users cannot write the archive, jobs or the audit log directly
    for sql in [
        "insert into quantops.signal_embeddings_archive (id, strategy, symbol, as_of, features, created_at, updated_at, archive_reason) values (-1, 'm', 'x', now(), '{}', now(), now(), 'r')",
        "update quantops.jobs set enabled = false",
        "insert into quantops.audit_log (stream, action, outcome, actor_role, prev_hash, hash) values ('quantops', 'forged', 'ok', 'x', '', '')",
        "update quantops.settings set embedding_dims = 3",
    ] {
        expect_err(request(&a, sql, &[]), "42501", "permission denied");
    }
    // service_role maintains: it writes any row, and may pause a job
    let r = request(
        &Who::ServiceRole,
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, owner) values ('matrix', $1, now(), $2::text::uuid) returning id",
        &[&tag, &USER_B],
    );
    assert!(r.is_ok(), "{:?}", r.err());
    let r = request(&Who::ServiceRole, "update quantops.jobs set enabled = enabled where name = 'verify-audit' returning name", &[]);
    assert_eq!(r.unwrap().len(), 1);
    // but even service_role cannot write the audit log directly
    expect_err(request(&Who::ServiceRole, "delete from quantops.audit_log", &[]), "42501", "permission denied");
    // Supabase's postgres has no write grant on it either
    expect_err(request(&Who::Postgres, "delete from quantops.audit_log", &[]), "42501", "permission denied");
    expect_err(request(&Who::Postgres, "update quantops.audit_log set outcome = 'ok'", &[]), "42501", "permission denied");
    // and nobody, not even the table's owner (the superuser supabase_admin), changes or removes
    // an audit row: the append-only triggers fire for every role
    for sql in ["delete from quantops.audit_log", "update quantops.audit_log set outcome = 'ok'", "truncate quantops.audit_log"] {
        let mut c = admin();
        let mut tx = c.transaction().unwrap();
        let e = tx.batch_execute(sql).unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "42501", "{sql}");
        assert!(db.message().contains("append-only"), "{sql}: {}", db.message());
    }
}

/// EXECUTE rights on every routine, [anon, authenticated, service_role, postgres], as declared
/// in quantops.routine_grants (the table grant_roles() grants from; a routine's row sits next to
/// its definition). A routine with no row is the owner's only. The tests below check that the
/// grants are exactly these, and pin the security boundaries independently of the table.
fn function_rules() -> BTreeMap<String, [bool; 4]> {
    let mut c = admin();
    // a declared routine that does not exist is a mistake in the declaration
    let dangling: Vec<String> = c
        .query(
            "select g.routine from quantops.routine_grants g \
             where pg_catalog.to_regprocedure(pg_catalog.replace(g.routine, '@vector@', \
                     (select pg_catalog.format('%I.vector', n.nspname) from pg_catalog.pg_extension e \
                        join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector'))) is null",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(dangling.is_empty(), "quantops.routine_grants names routines that do not exist: {dangling:?}");
    c.query(
        "select p.oid::regprocedure::text, coalesce(g.tier, 'owner') from pg_catalog.pg_proc p \
         left join quantops.routine_grants g on pg_catalog.to_regprocedure(pg_catalog.replace(g.routine, '@vector@', \
             (select pg_catalog.format('%I.vector', n.nspname) from pg_catalog.pg_extension e \
                join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector'))) = p.oid \
         where p.pronamespace = 'quantops'::regnamespace",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let sig: String = r.get(0);
        let tier: String = r.get(1);
        let rights = match tier.as_str() {
            "anon" => [true, true, true, true],
            "authenticated" => [false, true, true, true],
            "service_role" => [false, false, true, true],
            "postgres" => [false, false, false, true],
            _ => [false, false, false, false],
        };
        (sig.trim_start_matches("quantops.").replace(", ", ","), rights)
    })
    .collect()
}

/// The boundaries that matter most, pinned here and not read from the declaration: what anon may
/// run (it must write nothing: tests/hostile.rs), what only postgres gets beyond service_role, and
/// which internal helpers any API role may run (each needed by a caller-rights routine).
#[test]
fn role_matrix_boundaries_are_pinned() {
    let rules = function_rules();
    let with = |i: usize| -> BTreeSet<String> { rules.iter().filter(|(_, r)| r[i]).map(|(k, _)| k.clone()).collect() };
    let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        with(0),
        set(&["evaluate_flag(text,jsonb)", "flag_enabled(text,jsonb)", "require_flag(text,jsonb)", "uid()", "version()"]),
        "what anon may execute"
    );
    let postgres_only: BTreeSet<String> = with(3).difference(&with(2)).cloned().collect();
    assert_eq!(postgres_only, set(&["configure(integer,integer,text)", "set_artifact_check(text)"]), "postgres beyond service_role");
    let helpers: BTreeSet<String> = with(3).into_iter().filter(|k| k.starts_with('_')).collect();
    assert_eq!(
        helpers,
        set(&[
            "_audit_payload(quantops.audit_log)",
            "_caller_role()",
            "_embed_text(text)",
            "_embedding_http_state()",
            "_finite(double precision)",
            "_finite_array(double precision[])",
            "_index_health(oid,boolean,integer,integer,double precision,integer)",
            "_maintain_index(oid,boolean,boolean)",
            "_prune_health()",
            "_prune_record(bigint,bigint,jsonb)",
            "_prune_start(text)",
            "_record_run(text,text,timestamp with time zone,timestamp with time zone,double precision,double precision,double precision,double precision,double precision,double precision,double precision,integer,jsonb,text,integer)",
            "_require_primary(text)",
            "_run_backtest(text,text[],jsonb,jsonb,timestamp with time zone,timestamp with time zone,text,integer)",
            "_text_list(jsonb,text)",
        ]),
        "internal helpers that an API role may execute"
    );
    // the helpers that guard a gate, a chain or the worker stay the owner's
    for k in
        ["_gates_passed(text)", "_gates_consume(text)", "_audit_chain()", "_audit_digest(bytea,text)", "_index_state()", "grant_roles()"]
    {
        assert_eq!(rules.get(k), Some(&[false, false, false, false]), "{k}");
    }
}

#[test]
fn role_matrix_execute_on_every_function() {
    let mut c = admin();
    let rows = c
        .query(
            "select p.oid::regprocedure::text, p.prosecdef, coalesce(array_to_string(p.proconfig, ','), '') \
             from pg_proc p where p.pronamespace = 'quantops'::regnamespace",
            &[],
        )
        .unwrap();
    let rules = function_rules();
    let mut seen = BTreeSet::new();
    for r in &rows {
        let sig: String = r.get(0);
        let key = sig.trim_start_matches("quantops.").replace(", ", ",");
        let expect = rules.get(key.as_str()).unwrap_or_else(|| panic!("{sig} has no row in the role matrix"));
        seen.insert(key.clone());
        for (i, role) in ["anon", "authenticated", "service_role", "postgres"].iter().enumerate() {
            let ok: bool =
                c.query_one("select has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')", &[role, &sig]).unwrap().get(0);
            assert_eq!(ok, expect[i], "EXECUTE on {sig} for {role}");
        }
        // PUBLIC has nothing
        let public: bool = c
            .query_one(
                "select exists (select 1 from pg_proc p, aclexplode(p.proacl) a where p.oid = $1::text::regprocedure \
                 and a.grantee = 0 and a.privilege_type = 'EXECUTE') or (select proacl is null from pg_proc where oid = $1::text::regprocedure)",
                &[&sig],
            )
            .unwrap()
            .get(0);
        assert!(!public, "{sig} is executable by PUBLIC");
        // SECURITY DEFINER only with search_path pinned to pg_catalog first and pg_temp last (an
        // empty path would search pg_temp first for types)
        let (secdef, config): (bool, String) = (r.get(1), r.get(2));
        if secdef {
            assert!(
                config.contains("search_path=pg_catalog, pg_temp"),
                "{sig} is SECURITY DEFINER without search_path = pg_catalog, pg_temp: {config}"
            );
        }
    }
    assert_eq!(seen.len(), rules.len(), "the role matrix names a function that does not exist");
}

#[test]
fn role_matrix_calls_through_postgrest() {
    // each callable function, called as each role: allowed ones succeed, the others get 42501
    let calls: Vec<(&str, &str)> = vec![
        ("uid()", "select quantops.uid()"),
        ("version()", "select quantops.version()"),
        ("redact_secrets(jsonb)", "select quantops.redact_secrets('{\"token\": \"t\"}')"),
        ("log_tool_call(text,text,uuid,jsonb,text,jsonb,text)", "select quantops.log_tool_call(tool => 'matrix', arguments => '{}')"),
        ("log_flow_run(text,text,uuid,jsonb,text,jsonb)", "select quantops.log_flow_run(flow => 'matrix')"),
        ("verify_audit(text)", "select * from quantops.verify_audit()"),
        ("status()", "select quantops.status()"),
        ("run_job(text)", "select quantops.run_job('verify-audit')"),
        ("configure(integer,integer,text)", "select quantops.configure(dims => -1)"),
        ("grant_roles()", "select quantops.grant_roles()"),
        ("_audit_digest(bytea,text)", "select quantops._audit_digest('', 'x')"),
        ("_caller_role()", "select quantops._caller_role()"),
        ("embedding_asof(bigint,timestamp with time zone)", "select * from quantops.embedding_asof(1, now())"),
        ("sweep_embeddings()", "select quantops.sweep_embeddings() from (select 1) x where exists (select 1 from quantops.embedders where active)"),
        ("retry_failed(text,text)", "select quantops.retry_failed('no-such-embedder')"),
        ("embedding_input_hash(text,integer,text,text,jsonb,double precision[],text,text[])",
         "select quantops.embedding_input_hash(name, version, 's', 'x', '{}', null, 'r', '{}') from quantops.embedders where active"),
        ("_wake_worker()", "select quantops._wake_worker()"),
        ("prune_plan(text)", "select * from quantops.prune_plan()"),
        ("index_health(regclass,boolean,integer,integer,double precision,integer)", "select quantops.index_health(sample_rows => 100)"),
        ("maintain_index(regclass,boolean,boolean)", "select quantops.maintain_index(dry_run => true)"),
        ("match_signals(vector,integer,jsonb,timestamp with time zone)",
         "select count(*) from quantops.match_signals(array_fill(0.1::real, array[(select embedding_dims from quantops.settings)])::extensions.vector, 3)"),
        ("set_retention(text,text,text,interval,integer,boolean)", "select quantops.set_retention('matrix', 'max_age', max_age => interval '100 years', enabled => false)"),
        ("discover(text,text)", "select count(*) from quantops.discover()"),
        ("alias_asof(text,text,timestamp with time zone)", "select quantops.alias_asof('no-such-model', 'production')"),
        ("backtest_metrics(double precision[],integer,double precision)", "select * from quantops.backtest_metrics(array[0.01, -0.02])"),
        ("create_model(text,text,text)", "select quantops.create_model('matrix-model')"),
        ("artifacts_to_delete(interval)", "select count(*) from quantops.artifacts_to_delete()"),
        ("flag_enabled(text,jsonb)", "select quantops.flag_enabled('no.such.flag')"),
        ("evaluate_flag(text,jsonb)", "select * from quantops.evaluate_flag('no.such.flag')"),
        ("set_flag(text,jsonb)", "select quantops.set_flag('matrix.flag', '{\"environments\": {\"local\": true}}')"),
    ];
    let rules = function_rules();
    for who in who_all() {
        for (key, sql) in &calls {
            let r = rules.get(*key).unwrap_or_else(|| panic!("{key} is not a routine of quantops"));
            let allowed = match &who {
                Who::Anon => r[0],
                Who::User(_) => r[1],
                Who::ServiceRole => r[2],
                Who::Postgres => r[3],
            };
            let r = request(&who, sql, &[]);
            if !allowed {
                assert_eq!(sqlstate(&r).as_deref(), Some("42501"), "{} calling {key}", who.label());
            } else if *key == "configure(integer,integer,text)" {
                // postgres may call it; -1 is then refused for what it is
                assert_eq!(sqlstate(&r).as_deref(), Some("22023"), "{} calling {key}", who.label());
            } else {
                assert!(r.is_ok(), "{} calling {key}: {:?}", who.label(), r.err());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Identity and the audit trail through PostgREST-shaped requests
// ---------------------------------------------------------------------------------------------

#[test]
fn uid_matches_supabase_auth_uid() {
    let u = new_user();
    let r = request(&Who::User(u.clone()), "select quantops.uid()::text, auth.uid()::text, auth.role()", &[]).unwrap();
    assert_eq!(r[0].get::<_, String>(0), u);
    assert_eq!(r[0].get::<_, String>(1), u);
    assert_eq!(r[0].get::<_, String>(2), "authenticated");
}

#[test]
fn tool_call_pair_records_who_and_survives_a_failed_call() {
    let u = new_user();
    let me = Who::User(u.clone());
    // request 1: the agent announces the call (committed on its own)
    let r = request(
        &me,
        "select quantops.log_tool_call(tool => 'search_memory', arguments => $1::text::jsonb, agent => 'planner')::text",
        &[&r#"{"query": "momentum AAPL", "openai_api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz"}"#],
    )
    .unwrap();
    let id: String = r[0].get(0);
    // request 2: the tool itself fails, and its request rolls back
    let r = request(&me, "select 1 / 0", &[]);
    assert_eq!(sqlstate(&r).as_deref(), Some("22012"));
    // request 3: the agent records the failure
    request(
        &me,
        "select quantops.log_tool_call(tool => 'search_memory', phase => 'finish', call_id => $1::text::uuid, outcome => 'error', result => '{\"error\": \"division by zero\"}')",
        &[&id],
    )
    .unwrap();
    // both rows are on record, with who did it and nothing secret
    let mut c = admin();
    let rows = c
        .query(
            "select outcome, actor::text, actor_role, args::text, duration_us from quantops.audit_log \
             where call_id = $1::text::uuid order by seq",
            &[&id],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), "started");
    assert_eq!(rows[1].get::<_, String>(0), "error");
    for r in &rows {
        assert_eq!(r.get::<_, String>(1), u);
        assert_eq!(r.get::<_, String>(2), "authenticated");
        let args: String = r.get(3);
        assert!(!args.contains("sk-proj"), "secret leaked into the audit log: {args}");
    }
    let start_args: String = rows[0].get(3);
    assert!(start_args.contains("[redacted]") && start_args.contains("planner"), "{start_args}");
    assert!(rows[1].get::<_, Option<i64>>(4).unwrap() >= 0);
    // the user sees their own audit rows and nobody else's
    let r = request(&me, "select count(*), count(distinct actor) from quantops.audit_log", &[]).unwrap();
    assert_eq!((r[0].get::<_, i64>(0), r[0].get::<_, i64>(1)), (2, 1));
    // another user cannot finish someone else's call
    let other = Who::User(new_user());
    let r = request(
        &other,
        "select quantops.log_tool_call(tool => 'search_memory', phase => 'finish', call_id => $1::text::uuid, outcome => 'ok')",
        &[&id],
    );
    expect_err(r, "42704", "no started tool call");
    // and a call is finished once
    let r = request(
        &me,
        "select quantops.log_tool_call(tool => 'search_memory', phase => 'finish', call_id => $1::text::uuid, outcome => 'ok')",
        &[&id],
    );
    expect_err(r, "55000", "already finished");
}

#[test]
fn concurrent_writers_keep_one_unbroken_chain() {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let who = if t % 2 == 0 { Who::ServiceRole } else { Who::User(new_user()) };
                for i in 0..25 {
                    let sql = if matches!(who, Who::ServiceRole) {
                        "select quantops.log_flow_run(flow => 'concurrency', parameters => jsonb_build_object('i', $1::int))::text"
                    } else {
                        "select quantops.log_tool_call(tool => 'concurrency', arguments => jsonb_build_object('i', $1::int))::text"
                    };
                    request(&who, sql, &[&i]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = admin();
    for r in c.query("select stream, valid, rows from quantops.verify_audit()", &[]).unwrap() {
        let (s, valid): (String, bool) = (r.get(0), r.get(1));
        assert!(valid, "stream {s} broke under concurrent writers");
    }
    let gaps = scalar_i64(
        &mut c,
        "select count(*) from (select seq - lag(seq) over (partition by stream order by seq) d from quantops.audit_log) x where d <> 1",
    );
    assert_eq!(gaps, 0);
}

#[test]
fn verify_audit_finds_altered_removed_and_truncated_rows() {
    let mut c = admin();
    for i in 0..5 {
        c.execute("select quantops.log_flow_run(flow => 'tamper-test', parameters => jsonb_build_object('i', $1::int))", &[&i]).unwrap();
    }
    let last = scalar_i64(&mut c, "select max(seq) from quantops.audit_log where stream = 'flow_runs'");
    // tamper in a transaction that we roll back, so the shared cluster stays intact
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("alter table quantops.audit_log disable trigger audit_log_append_only").unwrap();
    tx.execute(
        "update quantops.audit_log set args = jsonb_set(args, '{input,i}', '99') where stream = 'flow_runs' and seq = $1",
        &[&(last - 2)],
    )
    .unwrap();
    let r = tx.query_one("select valid, first_bad_seq, problem from quantops.verify_audit('flow_runs')", &[]).unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_eq!(r.get::<_, Option<i64>>(1), Some(last - 2));
    assert!(r.get::<_, Option<String>>(2).unwrap().contains("altered"));
    tx.rollback().unwrap();

    let mut tx = c.transaction().unwrap();
    tx.batch_execute("alter table quantops.audit_log disable trigger audit_log_append_only").unwrap();
    tx.execute("delete from quantops.audit_log where stream = 'flow_runs' and seq = $1", &[&(last - 1)]).unwrap();
    let r = tx.query_one("select valid, first_bad_seq, problem from quantops.verify_audit('flow_runs')", &[]).unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_eq!(r.get::<_, Option<i64>>(1), Some(last));
    assert!(r.get::<_, Option<String>>(2).unwrap().contains("removed"));
    tx.rollback().unwrap();

    let mut tx = c.transaction().unwrap();
    tx.batch_execute("alter table quantops.audit_log disable trigger audit_log_append_only").unwrap();
    tx.execute("delete from quantops.audit_log where stream = 'flow_runs' and seq = $1", &[&last]).unwrap();
    let r = tx.query_one("select valid, first_bad_seq, problem from quantops.verify_audit('flow_runs')", &[]).unwrap();
    assert!(!r.get::<_, bool>(0));
    assert!(r.get::<_, Option<String>>(2).unwrap().contains("after"));
    // the verify job records the failure instead of raising
    let r = tx.query_one("select quantops.run_job('verify-audit')->>'status'", &[]).unwrap();
    assert_eq!(r.get::<_, String>(0), "failed");
    tx.rollback().unwrap();

    let r = c.query_one("select bool_and(valid) from quantops.verify_audit()", &[]).unwrap();
    assert!(r.get::<_, bool>(0));
}

// ---------------------------------------------------------------------------------------------
// Errors: each class gets its SQLSTATE and message, and the database is exactly as before
// ---------------------------------------------------------------------------------------------

fn fingerprint(c: &mut postgres::Client) -> (i64, i64, i64, i64) {
    let r = c
        .query_one(
            "select (select count(*) from quantops.signal_embeddings), (select count(*) from quantops.backtest_results), \
             (select count(*) from quantops.audit_log), (select count(*) from quantops.job_runs)",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[test]
fn every_error_class_has_its_sqlstate_and_loses_nothing() {
    let d = dims();
    let mut c = admin();
    let settings_before: String = c.query_one("select row(s.*)::text from quantops.settings s", &[]).unwrap().get(0);
    let before = fingerprint(&mut c);
    let svc = Who::ServiceRole;
    let user = Who::User(USER_A.into());
    let wrong_dims = vec_lit(0.1, 3);
    let nan_vec = format!("[{}]", vec!["NaN"; d].join(","));
    let cases: Vec<(&str, Who, String, &str, &str)> = vec![
        // (what, who, sql, sqlstate, message part)
        ("null tool", user.clone(), "select quantops.log_tool_call(null)".into(), "22004", "tool must not be null"),
        ("bad phase", user.clone(), "select quantops.log_tool_call('t', phase => 'middle')".into(), "22023", "invalid phase"),
        ("arguments not an object", user.clone(), "select quantops.log_tool_call('t', arguments => '[1]')".into(), "22023", "invalid arguments"),
        ("control characters in a name", user.clone(), "select quantops.log_tool_call(E't\\x01')".into(), "22023", "invalid tool"),
        ("finish without outcome", user.clone(), "select quantops.log_tool_call('t', phase => 'finish', call_id => gen_random_uuid())".into(), "22004", "outcome must not be null"),
        ("unknown call", user.clone(), "select quantops.log_tool_call('t', phase => 'finish', call_id => gen_random_uuid(), outcome => 'ok')".into(), "42704", "no started tool call"),
        ("unknown stream", svc.clone(), "select * from quantops.verify_audit('payments')".into(), "42704", "unknown audit stream \"payments\""),
        ("null job", svc.clone(), "select quantops.run_job(null)".into(), "22004", "job must not be null"),
        ("unknown job", svc.clone(), "select quantops.run_job('drop-everything')".into(), "42704", "job \"drop-everything\" does not exist"),
        ("null dims", Who::Postgres, "select quantops.configure(null)".into(), "22004", "dims must not be null"),
        ("dims too large", Who::Postgres, "select quantops.configure(dims => 4096)".into(), "22023", "invalid dims: 4096"),
        ("bad lists", Who::Postgres, "select quantops.configure(dims => 384, lists => 0)".into(), "22023", "invalid lists: 0"),
        ("hostile metric", Who::Postgres, "select quantops.configure(dims => 384, metric => 'cosine); drop table quantops.jobs; --')".into(), "22023", "unknown metric"),
        ("configure without rights", svc.clone(), "select quantops.configure(dims => 384)".into(), "42501", "permission denied"),
        ("wrong dimension", user.clone(), format!("insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) values ('s', 'AAPL', now(), '{wrong_dims}', 'x')"), "22000", "expected"),
        ("NaN in a vector", user.clone(), format!("insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) values ('s', 'AAPL', now(), '{nan_vec}', 'x')"), "22000", "NaN not allowed"),
        ("NaN in a series", user.clone(), "insert into quantops.signal_embeddings (strategy, symbol, as_of, series) values ('s', 'AAPL', now(), '{1, NaN}')".into(), "23514", "signal_embeddings_series_check"),
        ("NULL strategy", user.clone(), "insert into quantops.signal_embeddings (strategy, symbol, as_of) values (null, 'AAPL', now())".into(), "23502", "strategy"),
        ("hostile strategy name", user.clone(), "insert into quantops.signal_embeddings (strategy, symbol, as_of) values (E'mom\\n; drop', 'AAPL', now())".into(), "23514", "signal_embeddings_strategy_check"),
        ("features not an object", user.clone(), "insert into quantops.signal_embeddings (strategy, symbol, as_of, features) values ('s', 'AAPL', now(), '[1]')".into(), "23514", "signal_embeddings_features_check"),
        ("embedding without embedder", user.clone(), format!("insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding) values ('s', 'AAPL', now(), '{}')", vec_lit(0.2, d)), "23514", "signal_embeddings_embedder_check"),
        ("NaN sharpe", svc.clone(), "select quantops.record_backtest('e1', 's', '2024-01-01', '2024-06-01', sharpe => 'NaN')".into(), "22023", "sharpe must be a finite number"),
        ("infinite cagr", svc.clone(), "select quantops.record_backtest('e2', 's', '2024-01-01', '2024-06-01', cagr => '-Infinity')".into(), "22023", "cagr must be a finite number"),
        ("period ends before it starts", svc.clone(), "select quantops.record_backtest('e3', 's', '2024-06-01', '2024-01-01')".into(), "22023", "period_end must be after period_start"),
        ("drawdown above 100%", svc.clone(), "select quantops.record_backtest('e4', 's', '2024-01-01', '2024-06-01', max_drawdown => 1.5)".into(), "22023", "max_drawdown must be between 0 and 1"),
        ("negative trades", svc.clone(), "select quantops.record_backtest('e5', 's', '2024-01-01', '2024-06-01', trades => -3)".into(), "22023", "must not be negative"),
        ("artifact path escaping its prefix", svc.clone(), "select quantops.record_backtest('e6', 's', '2024-01-01', '2024-06-01', artifact_path => 'backtests/../../secrets')".into(), "23514", "backtest_results_artifact_path_check"),
        ("a backtest written directly", user.clone(), "insert into quantops.backtest_results (run_id, strategy, period_start, period_end) values ('e8', 's', '2024-01-01', '2024-06-01')".into(), "42501", "permission denied"),
        ("model name without version", svc.clone(), "select quantops.record_backtest('e7', 's', '2024-01-01', '2024-06-01', model => 'm')".into(), "22023", "give model and model_version together"),
        ("anon calls an RPC", Who::Anon, "select quantops.log_tool_call('t')".into(), "42501", "permission denied"),
        ("user reads the scheduler", user.clone(), "select * from quantops.job_runs".into(), "42501", "permission denied"),
    ];
    for (what, who, sql, state, msg) in cases {
        let r = request(&who, &sql, &[]);
        match r {
            Ok(_) => panic!("{what}: expected SQLSTATE {state}, got success"),
            Err(e) => {
                let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
                assert_eq!(db.code().code(), state, "{what}: {}", db.message());
                let full = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
                assert!(full.contains(msg), "{what}: message {full:?} lacks {msg:?}");
            }
        }
    }
    assert_eq!(fingerprint(&mut c), before, "a failed call changed the database");
    let settings_after: String = c.query_one("select row(s.*)::text from quantops.settings s", &[]).unwrap().get(0);
    assert_eq!(settings_after, settings_before);
    // the errors that have a detail and a hint carry them
    let e = request(&Who::Postgres, "select quantops.configure(dims => 4096)", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert!(db.detail().unwrap().contains("between 1 and 2000"));
    let e = request(&svc, "select quantops.run_job('nope')", &[]).unwrap_err();
    assert!(e.as_db_error().unwrap().hint().unwrap().contains("verify-audit"));
}

#[test]
fn configure_refuses_to_change_the_dimension_of_stored_vectors() {
    let d = dims();
    let mut c = admin();
    let mut tx = c.transaction().unwrap();
    tx.execute(
        &format!(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) values ('cfg', 'X', now(), '{}', 'x')",
            vec_lit(0.5, d)
        ),
        &[],
    )
    .unwrap();
    let e = tx.query("select quantops.configure(dims => 8)", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert!(db.message().contains(&format!("of {d} dimensions, not 8")), "{}", db.message());
    assert!(db.hint().is_some());
    tx.rollback().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The scheduler worker: alive, runs jobs, reloads settings on SIGHUP, survives kill -9
// ---------------------------------------------------------------------------------------------

fn worker_pid(c: &mut postgres::Client) -> Option<i32> {
    c.query_opt("select pid from pg_stat_activity where backend_type = 'quantops scheduler'", &[]).ok().flatten().map(|r| r.get(0))
}

fn status_alive() -> bool {
    let mut c = admin();
    let r = c.query_one("select coalesce((quantops.status()->'workers'->0->>'alive')::bool, false)", &[]).unwrap();
    r.get(0)
}

#[test]
fn worker_runs_due_jobs_and_records_them() {
    let mut c = admin();
    wait_for("the scheduler to be alive", Duration::from_secs(30), || status_alive().then_some(()));
    let before = scalar_i64(&mut c, "select coalesce(max(id), 0) from quantops.job_runs");
    c.execute("update quantops.jobs set next_run_at = now() where name = 'verify-audit'", &[]).unwrap();
    let (status, runner): (String, String) = wait_for("a worker run of verify-audit", Duration::from_secs(30), || {
        let mut c = admin();
        c.query_opt(
            "select status, runner from quantops.job_runs where job = 'verify-audit' and id > $1 and status <> 'running' order by id limit 1",
            &[&before],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
    });
    assert_eq!(status, "succeeded");
    assert_eq!(runner, "worker");
    // it moved the job's next run forward by run_every
    let ahead: bool = c
        .query_one("select next_run_at > now() + interval '50 minutes' from quantops.jobs where name = 'verify-audit'", &[])
        .unwrap()
        .get(0);
    assert!(ahead);
}

#[test]
fn worker_reloads_settings_on_sighup() {
    let mut c = admin();
    wait_for("the scheduler to be alive", Duration::from_secs(30), || status_alive().then_some(()));
    for sql in ["alter system set quantops.naptime = 1", "alter system set quantops.enabled = off", "select pg_reload_conf()"] {
        c.batch_execute(sql).unwrap();
    }
    let r = std::panic::catch_unwind(|| {
        wait_for("the worker to report enabled = off and naptime 1", Duration::from_secs(30), || {
            let mut c = admin();
            let r = c.query_one("select state, naptime_s from quantops.workers where name = 'quantops scheduler'", &[]).unwrap();
            (r.get::<_, String>(0) == "disabled" && r.get::<_, i32>(1) == 1).then_some(())
        })
    });
    for sql in ["alter system reset quantops.naptime", "alter system reset quantops.enabled", "select pg_reload_conf()"] {
        c.batch_execute(sql).unwrap();
    }
    r.unwrap();
    wait_for("the worker to be running again", Duration::from_secs(30), || {
        let mut c = admin();
        let r = c.query_one("select state from quantops.workers where name = 'quantops scheduler'", &[]).unwrap();
        (r.get::<_, String>(0) == "running").then_some(())
    });
}

#[test]
fn worker_comes_back_after_kill_9() {
    let mut c = admin();
    let pid = wait_for("the scheduler process", Duration::from_secs(30), || worker_pid(&mut admin()));
    let audit_before = scalar_i64(&mut c, "select count(*) from quantops.audit_log");
    drop(c);
    // SIGKILL: the postmaster treats it as a crash, resets every backend and restarts the worker
    let ok = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill -9 {pid} failed");
    let new_pid = wait_for("a new scheduler process", Duration::from_secs(60), || {
        let mut c = match std::panic::catch_unwind(admin) {
            Ok(c) => c,
            Err(_) => return None,
        };
        worker_pid(&mut c).filter(|p| *p != pid)
    });
    assert_ne!(new_pid, pid);
    wait_for("status() to report it alive", Duration::from_secs(60), || status_alive().then_some(()));
    let mut c = admin();
    // nothing committed was lost, and the chains are intact
    assert!(scalar_i64(&mut c, "select count(*) from quantops.audit_log") >= audit_before);
    let ok: bool = c.query_one("select bool_and(valid) from quantops.verify_audit()", &[]).unwrap().get(0);
    assert!(ok);
}

#[test]
fn status_reports_version_settings_and_counts() {
    let r = request(&Who::ServiceRole, "select quantops.status()::text", &[]).unwrap();
    let s: serde_json::Value = serde_json::from_str(&r[0].get::<_, String>(0)).unwrap();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["settings"]["dims"], 384);
    assert_eq!(s["scheduler"]["preloaded"], true);
    assert!(s["counts"]["signals"].as_i64().unwrap() >= 0);
    assert!(s["jobs"].as_array().unwrap().iter().any(|j| j["job"] == "verify-audit"));
}
