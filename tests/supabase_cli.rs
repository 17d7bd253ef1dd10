//! The Supabase CLI test: the real `supabase` CLI (npm supabase@2.117.0, installed by
//! scripts/bootstrap.sh), connected as Supabase's non-superuser `postgres`, applies
//! supabase/migrations and supabase/seed.sql to the Supabase-shaped cluster with
//! `db push --include-seed`, again to a fresh cluster, then once more (nothing to apply); each
//! leaves the same database. `db lint` and `db advisors` (security) must find nothing in quantops.

mod common;

use common::*;
use std::process::Command;

/// Runs the CLI against the cluster as Supabase's `postgres` (not a superuser), as the CLI does
/// on every Supabase project (it even runs `SET SESSION ROLE postgres` when given a superuser).
fn cli(args: &[&str]) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable", port());
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--db-url", &url]);
    let out = Command::new(format!("{root}/tools/node_modules/.bin/supabase"))
        .args(&full)
        .current_dir(root)
        .env("DO_NOT_TRACK", "1")
        .env("SUPABASE_TELEMETRY_DISABLED", "1")
        .output()
        .expect("the Supabase CLI is installed by scripts/bootstrap.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn cluster(cmd: &str) {
    let ok = Command::new("bash").args([concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"), cmd]).status().unwrap();
    assert!(ok.success(), "scripts/cluster.sh {cmd}");
}

fn assert_seeded(what: &str) {
    let mut c = admin();
    let r = c
        .query_one(
            "select (select count(*) from quantops.signal_embeddings), \
                    (select count(distinct strategy) from quantops.signal_embeddings), \
                    (select count(distinct symbol) from quantops.signal_embeddings), \
                    (select count(*) from quantops.backtest_results), \
                    (select embedding_dims from quantops.settings), \
                    (select count(*) from cron.job where jobname = 'quantops-verify-audit'), \
                    (select count(*) from storage.buckets where id = 'model-artifacts'), \
                    (select count(*) from supabase_migrations.schema_migrations)",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 3000, "{what}: signals");
    assert_eq!(r.get::<_, i64>(1), 5, "{what}: strategies");
    assert_eq!(r.get::<_, i64>(2), 12, "{what}: symbols");
    assert_eq!(r.get::<_, i64>(3), 25, "{what}: backtests");
    assert_eq!(r.get::<_, Option<i32>>(4), Some(384), "{what}: dims");
    assert_eq!(r.get::<_, i64>(5), 1, "{what}: cron job");
    assert_eq!(r.get::<_, i64>(6), 1, "{what}: bucket");
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/supabase/migrations")).unwrap().count() as i64;
    assert_eq!(r.get::<_, i64>(7), migrations, "{what}: migrations recorded");
    // the extension's own invariants hold after the CLI's work
    let ok: bool = c.query_one("select bool_and(valid) from quantops.verify_audit()", &[]).unwrap().get(0);
    assert!(ok, "{what}: audit chain");
}

#[test]
fn supabase_cli_push_then_reset_then_lint() {
    let (ok, out) = cli(&["db", "push", "--include-seed", "--yes"]);
    assert!(ok, "supabase db push failed:\n{out}");
    assert_seeded("after db push");

    // `supabase db reset` drops every extension as postgres: on Supabase's image supautils runs
    // that DROP as supabase_admin, and supautils (a C module) is not here. Its effect, a fresh
    // database with the migrations and seed applied again, is a fresh cluster shaped like the
    // image (extensions created as supabase_admin) and the same push.
    cluster("reset");
    let (ok, out) = cli(&["db", "push", "--include-seed", "--yes"]);
    assert!(ok, "supabase db push on a fresh database failed:\n{out}");
    assert_seeded("after a push to a fresh database");
    let (ok, out) = cli(&["db", "push", "--include-seed", "--yes"]);
    assert!(ok && !out.contains("Applying migration"), "a second push applies nothing:\n{out}");
    assert_seeded("after a second push");

    // db lint uses plpgsql_check; Supabase keeps extensions out of public
    admin().batch_execute("create extension if not exists plpgsql_check with schema extensions").unwrap();
    let (ok, out) = cli(&["db", "lint", "--schema", "quantops", "--level", "warning", "--fail-on", "warning"]);
    assert!(ok && out.contains("No schema errors found"), "supabase db lint:\n{out}");

    let (ok, out) = cli(&["db", "advisors", "--type", "security", "--level", "warn", "--fail-on", "warn"]);
    assert!(ok, "supabase db advisors found security issues:\n{out}");
}
