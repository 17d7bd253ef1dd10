//! The findings of the review behind issue 11, each as the probe that showed it, on a cluster
//! shaped like Supabase's (supabase_admin is the superuser and owns quantops; postgres is not a
//! superuser). Each test fails on the code before the fix (5499203) and passes now.

mod common;

use common::*;
use std::time::Duration;

/// The issue's own probe: a role with no privilege but membership in anon and a schema of its
/// own puts an `=(text, text)` of its own first on its path and asks for a flag. Before the fix,
/// the flag was read as the extension's owner under the caller's path, so the operator ran as
/// supabase_admin and made the role a superuser.
#[test]
fn a_flag_read_runs_no_code_of_the_caller_as_the_owner() {
    let mut a = admin();
    a.batch_execute(
        "drop schema if exists mallory cascade; drop role if exists mallory;
         create role mallory login; grant anon to mallory; grant create on database postgres to mallory;
         select quantops.set_flag('probe.flag', '{\"environments\": {\"production\": true}}');",
    )
    .unwrap();
    let mut m = connect("mallory");
    m.batch_execute(
        r#"
        create schema mallory;
        create function mallory.texteq(a text, b text) returns boolean language plpgsql as $$
        begin
          if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
            execute 'alter role mallory superuser';
          end if;
          return pg_catalog.texteq(a, b);
        end $$;
        create operator mallory.= (leftarg = text, rightarg = text, function = mallory.texteq);
        create function mallory.nameeq(a name, b name) returns boolean language plpgsql as $$
        begin
          if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
            execute 'alter role mallory superuser';
          end if;
          return pg_catalog.nameeq(a, b);
        end $$;
        create operator mallory.= (leftarg = name, rightarg = name, function = mallory.nameeq);
        "#,
    )
    .unwrap();
    for sql in [
        "select quantops.flag_enabled('probe.flag')",
        "select value::text from quantops.evaluate_flag('probe.flag')",
        "select quantops.require_flag('probe.flag')::text",
    ] {
        let mut m = connect("mallory");
        m.batch_execute("set search_path = mallory, pg_catalog; set role anon").unwrap();
        let r = m.query_one(sql, &[]);
        assert!(r.is_ok(), "{sql}: {r:?}");
        let su: bool = admin().query_one("select rolsuper from pg_roles where rolname = 'mallory'", &[]).unwrap().get(0);
        assert!(!su, "{sql} made mallory a superuser");
    }
    drop(m);
    a.batch_execute(
        "drop schema mallory cascade; revoke create on database postgres from mallory; drop role mallory;
         select quantops.drop_flag('probe.flag');",
    )
    .unwrap();
}

/// A gate holds against Supabase's postgres, which may UPDATE an alias directly: the gates'
/// token, which lets a write skip the full check right after promote() checked, is no one's to
/// set but the owner's, and a direct write is checked in full.
#[test]
fn a_gate_holds_against_postgres() {
    let mut a = admin();
    let m = format!("gate-{}", &new_user()[..8]);
    a.batch_execute("select quantops.set_artifact_check('off')").unwrap();
    a.query_one("select quantops.create_model($1)", &[&m]).unwrap();
    a.query_one("select quantops.register_model_version($1)", &[&m]).unwrap();
    a.query_one("select quantops.register_model_version($1)", &[&m]).unwrap();
    a.query_one(
        "select quantops.record_backtest($1 || '-1', 's', '2025-01-01', '2026-01-01', sharpe => 1.5, model => $1, model_version => 1)",
        &[&m],
    )
    .unwrap();
    a.query_one(
        "select quantops.record_backtest($1 || '-2', 's', '2025-01-01', '2026-01-01', sharpe => 0.1, model => $1, model_version => 2)",
        &[&m],
    )
    .unwrap();
    a.query_one("select quantops.set_promotion_policy($1, 'production', min_sharpe => 1.0, require_artifact => false)", &[&m]).unwrap();
    a.query_one("select quantops.promote($1, 1, 'production', null)", &[&m]).unwrap();
    // the review's attack: vouch for version 2 (then move the alias directly): refused
    let r = request(
        &Who::Postgres,
        "select quantops._gates_passed((select id from quantops.models where name = $1) || ':production:2')",
        &[&m],
    );
    expect_err(r, "42501", "permission denied for function _gates_passed");
    // the direct write alone is checked in full: 23514 naming the failed gate
    let r = request(
        &Who::Postgres,
        "update quantops.model_aliases set version = 2 where alias = 'production' and model_id = (select id from quantops.models where name = $1)",
        &[&m],
    );
    expect_err(r, "23514", "sharpe 0.1");
    // neither may the superuser's own session call the token functions except through promote()
    // and the trigger (a SECURITY DEFINER of the owner): nobody holds EXECUTE on them
    for f in ["_gates_passed(text)", "_gates_consume(text)"] {
        for role in ["anon", "authenticated", "service_role", "postgres"] {
            let may: bool = a
                .query_one("select has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')", &[&role, &format!("quantops.{f}")])
                .unwrap()
                .get(0);
            assert!(!may, "{role} may execute {f}");
        }
    }
    let v: Option<i32> = a.query_one("select quantops.alias_asof($1, 'production')", &[&m]).unwrap().get(0);
    assert_eq!(v, Some(1));
}

/// The superuser worker rebuilds (and drops leftovers of) an index only for its table's owner,
/// as REINDEX requires; quantops' own index stays quantops' to maintain.
#[test]
fn maintain_index_needs_the_tables_owner() {
    let mut p = studio();
    p.batch_execute(
        "drop table if exists public.qo_docs;
         create table public.qo_docs (id bigserial primary key, embedding extensions.vector(3));
         insert into public.qo_docs (embedding) select array[random(), random(), random()]::extensions.vector from generate_series(1, 300);
         create index qo_docs_ivf on public.qo_docs using ivfflat (embedding extensions.vector_l2_ops) with (lists = 4);
         grant select on public.qo_docs to service_role;",
    )
    .unwrap();
    // service_role may read the table (so it may measure it) but does not own it
    let r = request(&Who::ServiceRole, "select quantops.index_health('public.qo_docs', sample_rows => 100)", &[]);
    assert!(r.is_ok(), "{r:?}");
    let r = request(&Who::ServiceRole, "select quantops.maintain_index('public.qo_docs', force => true)", &[]);
    expect_err(r, "42501", "must be owner of table");
    let queued: i64 = admin()
        .query_one(
            "select count(*) from quantops.index_builds where index_name = 'public.qo_docs_ivf' and status in ('queued', 'running')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "a rebuild was queued for a role that does not own the table");
    // the owner may
    let r = request(&Who::Postgres, "select quantops.maintain_index('public.qo_docs', dry_run => true)", &[]);
    assert!(r.is_ok(), "{r:?}");
    // a table the caller may not even read: 42501 before anything is measured
    p.batch_execute("revoke select on public.qo_docs from service_role").unwrap();
    let r = request(&Who::ServiceRole, "select quantops.index_health('public.qo_docs', sample_rows => 100)", &[]);
    expect_err(r, "42501", "permission denied for table");
    // quantops' own index: the service tier maintains it
    let r = request(&Who::ServiceRole, "select quantops.maintain_index(dry_run => true)", &[]);
    assert!(r.is_ok(), "{r:?}");
    p.batch_execute("drop table public.qo_docs").unwrap();
}

/// The prune procedure's step that records a run updates only a run of the calling backend.
#[test]
fn a_prune_run_is_recorded_only_by_the_backend_that_runs_it() {
    let mut a = connect("authenticator");
    let id: i64 = {
        let mut tx = a.transaction().unwrap();
        tx.execute("select set_config('role', 'service_role', true)", &[]).unwrap();
        let id = tx.query_one("select quantops._prune_record(null, null, null)", &[]).unwrap().get(0);
        tx.commit().unwrap();
        id
    };
    let r = request(&Who::ServiceRole, "select quantops._prune_record($1, 999, '{\"forged\": true}')", &[&id]);
    assert!(r.is_ok(), "{r:?}");
    let (status, rows): (String, Option<i64>) = {
        let r = admin().query_one("select status, rows from quantops.job_runs where id = $1", &[&id]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), rows), ("running", None), "another backend rewrote the run");
    admin().execute("update quantops.job_runs set status = 'failed', finished_at = now(), error = 'test' where id = $1", &[&id]).unwrap();
}

/// The worker is a superuser session of the database `postgres` owns: a database-level
/// search_path that postgres sets decides nothing it runs.
#[test]
fn the_worker_ignores_a_search_path_set_on_its_database() {
    let mut p = studio();
    p.batch_execute(
        r#"
        drop schema if exists dbevil cascade;
        create schema dbevil;
        grant usage on schema dbevil to public;
        create table dbevil.ran (who text, at timestamptz default now());
        grant insert on dbevil.ran to public;
        create function dbevil.texteq(a text, b text) returns boolean language plpgsql as $$
        begin insert into dbevil.ran (who) values (current_user); return pg_catalog.texteq(a, b); end $$;
        create operator dbevil.= (leftarg = text, rightarg = text, function = dbevil.texteq);
        create function dbevil.int8eq(a bigint, b bigint) returns boolean language plpgsql as $$
        begin insert into dbevil.ran (who) values (current_user); return pg_catalog.int8eq(a, b); end $$;
        create operator dbevil.= (leftarg = bigint, rightarg = bigint, function = dbevil.int8eq);
        alter database postgres set search_path = dbevil, pg_catalog, public, extensions;
        "#,
    )
    .unwrap();
    // a new worker process reads the database's settings when it connects
    let root = env!("CARGO_MANIFEST_DIR");
    let ok = std::process::Command::new("bash").args([&format!("{root}/scripts/cluster.sh"), "restart"]).status().unwrap();
    assert!(ok.success());
    // it runs jobs meanwhile (verify-audit and the sweep read and compare text and bigint)
    let before: i64 = admin()
        .query_one("select count(*) from quantops.job_runs where runner = 'worker' and finished_at is not null", &[])
        .unwrap()
        .get(0);
    admin()
        .batch_execute("update quantops.jobs set next_run_at = now() where name in ('verify-audit', 'sweep-embeddings'); select quantops._wake_worker()")
        .unwrap();
    wait_for("the worker's jobs", Duration::from_secs(60), || {
        let n: i64 = admin()
            .query_one("select count(*) from quantops.job_runs where runner = 'worker' and finished_at is not null", &[])
            .unwrap()
            .get(0);
        (n >= before + 2).then_some(())
    });
    let ran: i64 = admin().query_one("select count(*) from dbevil.ran where who = 'supabase_admin'", &[]).unwrap().get(0);
    studio().batch_execute("alter database postgres reset search_path; drop schema dbevil cascade").unwrap();
    assert_eq!(ran, 0, "the superuser worker ran code of a database-level search_path");
}

/// Errors a user could reach as XX000 before: each now has its SQLSTATE, or is no error.
#[test]
fn errors_once_internal_have_their_sqlstates() {
    let sr = Who::ServiceRole;
    // pgrx drops STRICT as soon as one argument is an Option: NULLs must be checked, 22004
    let r = request(&sr, "select quantops.embedding_input_hash(null, 1, 's', 'x', '{}', null, 'r', '{}')", &[]);
    expect_err(r, "22004", "name must not be null");
    let r = request(&sr, "select quantops.embedding_input_hash('x', null, 's', 'x', '{}', null, 'r', '{}')", &[]);
    expect_err(r, "22004", "version must not be null");
    // multi-byte text in audited arguments (the redaction sliced bytes inside a character)
    let u = Who::User(USER_A.into());
    for text in ["Résumé de la stratégie", "日本語テキスト", "abcdefé"] {
        let r = request(&u, "select quantops.redact_secrets(jsonb_build_object('q', $1::text))::text", &[&text]);
        assert!(r.is_ok(), "{text}: {r:?}");
        let r = request(&u, "select quantops.log_tool_call('probe', arguments => jsonb_build_object('q', $1::text))", &[&text]);
        assert!(r.is_ok(), "{text}: {r:?}");
    }
    // a partitioned table or index has no pages of its own: 0A000, not "data corrupted"
    let mut p = studio();
    p.batch_execute(
        "drop table if exists public.qo_parted;
         create table public.qo_parted (id bigint, embedding extensions.vector(3)) partition by range (id);
         create table public.qo_parted_1 partition of public.qo_parted for values from (0) to (1000);
         insert into public.qo_parted select g, array[random(), random(), random()]::extensions.vector from generate_series(1, 200) g;
         create index qo_parted_ivf on public.qo_parted using ivfflat (embedding extensions.vector_l2_ops) with (lists = 2);",
    )
    .unwrap();
    let r = request(&Who::Postgres, "select quantops.index_health('public.qo_parted', sample_rows => 100)", &[]);
    expect_err(r, "0A000", "partitioned");
    let r = request(&Who::Postgres, "select quantops.index_health('public.qo_parted_ivf', sample_rows => 100)", &[]);
    expect_err(r, "0A000", "partitioned");
    p.batch_execute("drop table public.qo_parted").unwrap();
}

/// flag_enabled is PARALLEL SAFE and used in RLS policies: a parallel worker that reads a flag
/// uncached must neither assign a transaction id nor set a parameter in a way PostgreSQL forbids
/// there (both were XX000). force_parallel_mode = on runs the query in a parallel worker.
#[test]
fn flags_are_read_in_a_parallel_worker() {
    let mut a = admin();
    a.batch_execute("select quantops.set_flag('parallel.flag', '{\"environments\": {\"production\": true}}')").unwrap();
    let mut c = connect("authenticator");
    let mut tx = c.transaction().unwrap();
    // force_parallel_mode until PostgreSQL 15, debug_parallel_query from 16
    let knob: String = tx
        .query_one("select case when current_setting('server_version_num')::int >= 160000 then 'debug_parallel_query' else 'force_parallel_mode' end", &[])
        .unwrap()
        .get(0);
    tx.batch_execute(&format!(
        "select set_config('role', 'authenticated', true); set local {knob} = on; \
         set local parallel_setup_cost = 0; set local parallel_tuple_cost = 0"
    ))
    .unwrap();
    let on: bool = tx.query_one("select quantops.flag_enabled('parallel.flag')", &[]).unwrap().get(0);
    assert!(on);
    let plan: Vec<String> =
        tx.query("explain (costs off) select quantops.flag_enabled('parallel.flag')", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(plan.iter().any(|l| l.contains("Gather")), "not run in a parallel worker: {plan:?}");
    let r: bool = tx.query_one("select quantops.require_flag('parallel.flag')", &[]).unwrap().get(0);
    assert!(r);
    tx.rollback().unwrap();
    a.batch_execute("select quantops.drop_flag('parallel.flag')").unwrap();
}

/// The gates' evidence and the aliases are written only the ways quantops checks: a backtest only
/// through record_backtest() (no role writes the table directly: a future-dated row with a great
/// sharpe would pass any gate), an alias only by version (never renamed or given to another
/// model, which would skip its history), a signal never with an id of the caller's choosing (one
/// that collides with an archived row would stop the prune and restores for everyone).
#[test]
fn gate_evidence_aliases_and_ids_are_written_only_through_quantops() {
    for who in [Who::User(USER_A.into()), Who::ServiceRole, Who::Postgres] {
        let r = request(
            &who,
            "insert into quantops.backtest_results (run_id, strategy, period_start, period_end, sharpe, model_name, model_version, created_at) \
             values ('forged', 's', '2025-01-01', '2026-01-01', 99, 'm', 1, '2100-01-01')",
            &[],
        );
        expect_err(r, "42501", "permission denied");
        expect_err(request(&who, "update quantops.backtest_results set sharpe = 99", &[]), "42501", "permission denied");
        expect_err(request(&who, "delete from quantops.backtest_results", &[]), "42501", "permission denied");
        let r = request(
            &who,
            "insert into quantops.signal_embeddings (id, strategy, symbol, as_of) overriding system value values (1, 's', 'x', now())",
            &[],
        );
        expect_err(r, "42501", "permission denied");
    }
    let mut a = admin();
    let m = format!("alias-{}", &new_user()[..8]);
    a.batch_execute("select quantops.set_artifact_check('off')").unwrap();
    a.query_one("select quantops.create_model($1)", &[&m]).unwrap();
    a.query_one("select quantops.register_model_version($1)", &[&m]).unwrap();
    a.query_one("select quantops.promote($1, 1, 'canary', null)", &[&m]).unwrap();
    let rename = "update quantops.model_aliases set alias = 'production' where alias = 'canary' and model_id = (select id from quantops.models where name = $1)";
    expect_err(request(&Who::Postgres, rename, &[&m]), "42501", "permission denied");
    expect_err(request(&Who::ServiceRole, rename, &[&m]), "42501", "permission denied");
    let e = a.execute(rename, &[&m]).unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    // who moved an alias is recorded, not claimed
    let r = request(
        &Who::ServiceRole,
        "update quantops.model_aliases set version = 1 where alias = 'canary' and model_id = (select id from quantops.models where name = $1)",
        &[&m],
    );
    assert!(r.is_ok(), "{r:?}");
    let by: String = a
        .query_one("select updated_by from quantops.model_aliases where alias = 'canary' and model_id = (select id from quantops.models where name = $1)", &[&m])
        .unwrap()
        .get(0);
    assert_eq!(by, "service_role");
}

/// Relations that quantops reads as the superuser, where their schema is absent, could be made by
/// the database's owner (Supabase's postgres): a view named vault.decrypted_secrets or
/// storage.objects would run its maker's code as the superuser. quantops reads the Vault view only
/// if the supabase_vault extension made it, and storage.objects only if it is a plain table.
#[test]
fn look_alike_vault_and_storage_views_run_nothing_as_the_superuser() {
    let mut a = admin();
    let mut p = studio();
    p.batch_execute(
        r#"
        drop schema if exists qo_probe cascade;
        create schema qo_probe;
        create table qo_probe.ran (who text);
        grant usage on schema qo_probe to public;
        grant insert on qo_probe.ran to public;
        create function qo_probe.note() returns text language plpgsql as $$
        begin insert into qo_probe.ran values (current_user); return 'sk-forged'; end $$;
        "#,
    )
    .unwrap();
    // Vault: absent here; postgres (owner of the database) makes a look-alike
    p.batch_execute(
        "drop schema if exists vault cascade; create schema vault; \
         create view vault.decrypted_secrets as select 'quantops_probe'::text as name, qo_probe.note() as decrypted_secret;",
    )
    .unwrap();
    let active: String = a.query_one("select name from quantops.embedders where active", &[]).unwrap().get(0);
    request(
        &Who::ServiceRole,
        "select quantops.register_embedder('vault-probe', 'http', (select embedding_dims from quantops.settings), \
         '{\"url\": \"http://127.0.0.1:9/v1/embeddings\", \"model\": \"m\", \"api_key_secret\": \"quantops_probe\"}', activate => true)",
        &[],
    )
    .unwrap();
    a.execute(
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, rationale) values ('vault-probe', 'X', now(), 'probe')",
        &[],
    )
    .unwrap();
    let err: String = wait_for("the refresh to fail on the look-alike secret", Duration::from_secs(60), || {
        admin()
            .query_opt(
                "select error from quantops.job_runs where job = 'refresh-embeddings' and status = 'failed' \
                 and error like '%quantops_probe%' and started_at > now() - interval '2 minutes' limit 1",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    });
    assert!(err.contains("not found"), "{err}");
    a.query_one("select quantops.set_embedder($1)", &[&active]).unwrap();
    a.execute("delete from quantops.signal_embeddings where strategy = 'vault-probe'", &[]).unwrap();
    p.batch_execute("drop schema vault cascade").unwrap();
    // Storage: moved out of the way, and a look-alike view in its place
    a.batch_execute("alter schema storage rename to storage_real; grant create on database postgres to postgres").unwrap();
    p.batch_execute(
        "create schema storage; create view storage.objects as select 'model-artifacts'::text as bucket_id, qo_probe.note() as name",
    )
    .unwrap();
    let m = format!("storage-{}", &new_user()[..8]);
    let check_was: String = a.query_one("select artifact_check from quantops.settings", &[]).unwrap().get(0);
    a.batch_execute("select quantops.set_artifact_check('storage')").unwrap();
    a.query_one("select quantops.create_model($1)", &[&m]).unwrap();
    a.query_one("select quantops.register_model_version($1)", &[&m]).unwrap();
    let r = request(&Who::ServiceRole, "select quantops.promote($1, 1, 'production', null)", &[&m]);
    p.batch_execute("drop schema storage cascade").unwrap();
    a.batch_execute("alter schema storage_real rename to storage").unwrap();
    a.query_one("select quantops.set_artifact_check($1)", &[&check_was]).unwrap();
    expect_err(r, "23514", "storage.objects is not a table");
    let ran: Vec<String> = a.query("select who from qo_probe.ran", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    p.batch_execute("drop schema qo_probe cascade").unwrap();
    assert!(ran.is_empty(), "look-alike relations ran code as {ran:?}");
}
