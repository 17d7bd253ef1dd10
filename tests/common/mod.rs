//! Shared helpers for the integration tests: a real client against the cluster that
//! scripts/cluster.sh runs, and requests replayed the way PostgREST makes them.
#![allow(dead_code)]

use postgres::{Client, NoTls, Row};
use std::time::{Duration, Instant};

/// The PostgreSQL major the tests run against (QUANTOPS_PG, as scripts/pg.sh): 15 or 17.
pub fn major() -> u32 {
    std::env::var("QUANTOPS_PG").ok().and_then(|p| p.parse().ok()).unwrap_or(15)
}

/// The test cluster's port: QUANTOPS_PORT, else the major's default (scripts/pg.sh).
pub fn port() -> u16 {
    std::env::var("QUANTOPS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(if major() == 17 { 55442 } else { 55432 })
}

/// The test cluster's folder (its log, files the server must read): QUANTOPS_CLUSTER_DIR, else
/// the major's default (scripts/pg.sh).
pub fn cluster_dir() -> String {
    std::env::var("QUANTOPS_CLUSTER_DIR")
        .unwrap_or_else(|_| format!("{}/{}", env!("CARGO_MANIFEST_DIR"), if major() == 17 { ".cluster17" } else { ".cluster" }))
}

/// Connects, waiting up to 30 s while the server restarts (after a kill -9 the postmaster resets
/// every backend and replays WAL before it accepts connections again).
pub fn connect(user: &str) -> Client {
    connect_to(port(), user)
}

/// Connects to the server on `port` (see `connect`).
pub fn connect_to(port: u16, user: &str) -> Client {
    let url = format!("host=127.0.0.1 port={port} user={user} dbname=postgres connect_timeout=10");
    let t0 = Instant::now();
    loop {
        match Client::connect(&url, NoTls) {
            Ok(c) => return c,
            Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("cannot connect as {user} to 127.0.0.1:{port}: {e}; start the cluster with scripts/cluster.sh start"),
        }
    }
}

/// The bootstrap superuser of the Supabase-shaped cluster (supabase_admin): test setup, server
/// settings, and reads that no API role may make.
pub fn admin() -> Client {
    connect("supabase_admin")
}

/// Supabase's `postgres` role as Studio and migrations use it: NOT a superuser.
pub fn studio() -> Client {
    connect("postgres")
}

/// Who makes a request.
#[derive(Clone, Debug)]
pub enum Who {
    Anon,
    User(String),
    ServiceRole,
    Postgres,
}

impl Who {
    pub fn label(&self) -> String {
        match self {
            Who::Anon => "anon".into(),
            Who::User(u) => format!("authenticated:{}", &u[..8]),
            Who::ServiceRole => "service_role".into(),
            Who::Postgres => "postgres".into(),
        }
    }
}

pub const USER_A: &str = "11111111-1111-4111-8111-111111111111";
pub const USER_B: &str = "22222222-2222-4222-8222-222222222222";

pub fn new_user() -> String {
    let mut c = admin();
    let r = c.query_one("select gen_random_uuid()::text", &[]).unwrap();
    r.get(0)
}

/// One request as PostgREST makes it: connect as authenticator, BEGIN, set role and
/// request.jwt.claims with set_config(..., true), run the statement, COMMIT. Any error rolls
/// the whole request back. The postgres case is a direct session of Supabase's `postgres` role
/// (Studio, migrations), which is not a superuser.
pub fn request(who: &Who, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, postgres::Error> {
    request_on(port(), who, sql, params)
}

/// The same request made to the server on `port` (a replica, say).
pub fn request_on(port: u16, who: &Who, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, postgres::Error> {
    let mut c = match who {
        Who::Postgres => connect_to(port, "postgres"),
        _ => connect_to(port, "authenticator"),
    };
    let mut tx = c.transaction()?;
    match who {
        Who::Postgres => {}
        Who::Anon => set_claims(&mut tx, "anon", r#"{"role":"anon"}"#)?,
        Who::ServiceRole => set_claims(&mut tx, "service_role", r#"{"role":"service_role"}"#)?,
        Who::User(sub) => {
            set_claims(&mut tx, "authenticated", &format!(r#"{{"sub":"{sub}","role":"authenticated","aud":"authenticated"}}"#))?
        }
    }
    let rows = tx.query(sql, params)?;
    tx.commit()?;
    Ok(rows)
}

fn set_claims(tx: &mut postgres::Transaction, role: &str, claims: &str) -> Result<(), postgres::Error> {
    tx.execute(
        "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
         set_config('request.method', 'POST', true), set_config('request.path', '/rpc', true)",
        &[&role, &claims],
    )?;
    Ok(())
}

/// The SQLSTATE of a failed request.
pub fn sqlstate(r: &Result<Vec<Row>, postgres::Error>) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(e) => Some(e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no sqlstate: {e}"))),
    }
}

pub fn expect_err(r: Result<Vec<Row>, postgres::Error>, state: &str, msg_part: &str) {
    match r {
        Ok(_) => panic!("expected SQLSTATE {state} ({msg_part}), got success"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("expected SQLSTATE {state}, got {e}"));
            assert_eq!(db.code().code(), state, "wrong SQLSTATE for: {}", db.message());
            assert!(db.message().contains(msg_part), "message {:?} lacks {:?}", db.message(), msg_part);
        }
    }
}

pub fn scalar_i64(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get::<_, i64>(0)
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t0.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A 384-dimensional vector literal, as configured by the Supabase migration.
pub fn vec_lit(seed: f32, dims: usize) -> String {
    let v: Vec<String> = (0..dims).map(|i| format!("{:.4}", ((i as f32 + 1.0) * seed).sin())).collect();
    format!("[{}]", v.join(","))
}
