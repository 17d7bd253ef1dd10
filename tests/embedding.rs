//! Integration tests of the embedding refresh against the cluster of scripts/cluster.sh, with a
//! fake OpenAI-compatible provider on 127.0.0.1 (tests/fake_provider.py) for the HTTP path.
//! Single-threaded: the tests switch the active embedder.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const FEATURES: &str = r#"{"features": ["momentum_12_1", "volatility_20d", "zscore_5d", "volume_ratio", "carry"],
  "mean": [0.1, 0.35, 0, 1.5, 0], "std": [0.17, 0.14, 1.15, 0.58, 0.023], "seed": 42}"#;

struct Fake {
    child: Child,
    port: u16,
}

impl Fake {
    fn start() -> Fake {
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_provider.py"))
            .args(["384", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Fake { child, port: line.trim().parse().expect("the fake provider prints its port") }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/embeddings", self.port)
    }
    fn stats(&self) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(b"GET /stats HTTP/1.0\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        serde_json::from_str(buf.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh strategy name for this test's rows; rows of earlier tests are removed first, so an
/// embedder switch re-embeds only the seed and this test's rows.
fn tag() -> String {
    admin().execute("delete from quantops.signal_embeddings where strategy like 'it-%'", &[]).unwrap();
    format!("it-{}", &new_user()[..8])
}

/// Registers (once) and activates the built-in features embedder used by these tests.
fn use_features_embedder() -> i32 {
    let mut c = admin();
    let v: Option<i32> = c.query_one("select max(version) from quantops.embedders where name = 'it-features'", &[]).unwrap().get(0);
    let v = match v {
        Some(v) => v,
        None => {
            c.query_one("select quantops.register_embedder('it-features', 'features', 384, $1::text::jsonb)", &[&FEATURES]).unwrap().get(0)
        }
    };
    c.execute("select quantops.set_embedder('it-features', $1)", &[&v]).unwrap();
    v
}

/// Puts the features embedder back when a test that switched to http ends, even by a panic, so
/// the next test does not find the queue pointed at a provider that is gone.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(use_features_embedder);
    }
}

fn use_http_embedder(fake: &Fake, batch: i32, extra: &str) -> i32 {
    let params =
        format!(r#"{{"url": "{}", "model": "fake-embed-1", "template": "{{rationale}}", "batch_size": {batch}, {extra}}}"#, fake.url());
    let mut c = admin();
    c.query_one("select quantops.register_embedder('it-http', 'http', 384, $1::text::jsonb, activate => true)", &[&params]).unwrap().get(0)
}

fn insert_signals(t: &str, rationales: &[String]) {
    let mut c = admin();
    insert_signals_with(&mut c, t, rationales);
}

/// The same rows in one transaction: the worker sees them all at its wake-up at the commit.
fn insert_signals_at_once(t: &str, rationales: &[String]) {
    let mut c = admin();
    let mut tx = c.transaction().unwrap();
    insert_signals_with(&mut tx, t, rationales);
    tx.commit().unwrap();
}

fn insert_signals_with(c: &mut impl postgres::GenericClient, t: &str, rationales: &[String]) {
    for (i, r) in rationales.iter().enumerate() {
        c.execute(
            "insert into quantops.signal_embeddings (strategy, symbol, as_of, features, rationale, owner) \
             values ($1, 'SYM' || $2::int, now(), \
               jsonb_build_object('momentum_12_1', 0.01 * $2::int, 'volatility_20d', 0.2, 'zscore_5d', -1 + 0.001 * $2::int, \
                                  'volume_ratio', 1.1, 'carry', 0.001), $3, $4::text::uuid)",
            &[&t, &(i as i32), r, &USER_A],
        )
        .unwrap();
    }
}

/// (embedded by `embedder`, dead-lettered, still queued) among the rows of strategy `t`.
/// A connection made in the instant before the postmaster resets every backend (after a
/// kill -9) is closed under the query: that is `None`, "ask again", never a wrong count.
fn progress(t: &str, embedder: &str) -> Option<(i64, i64, i64)> {
    let mut c = admin();
    let r = c
        .query_one(
            "select count(*) filter (where s.embedder = $2 and not exists (select 1 from quantops.embedding_queue q where q.signal_id = s.id)), \
                    count(*) filter (where exists (select 1 from quantops.embedding_failures f where f.signal_id = s.id)), \
                    count(*) filter (where exists (select 1 from quantops.embedding_queue q where q.signal_id = s.id)) \
             from quantops.signal_embeddings s where s.strategy = $1",
            &[&t, &embedder],
        )
        .map_err(|e| {
            // no answer from the server (closed, reset: an I/O error), or 57P01/57P02/57P03:
            // terminated by the reset, or the server still recovering
            let reset = e.as_db_error().is_none() || e.code().is_some_and(|c| c.code().starts_with("57P"));
            assert!(reset, "progress query failed: {e}");
        })
        .ok()?;
    Some((r.get(0), r.get(1), r.get(2)))
}

fn wait_settled(t: &str, embedder: &str, total: i64, secs: u64) -> (i64, i64) {
    wait_for(&format!("every row of {t} embedded or dead-lettered"), Duration::from_secs(secs), || {
        let (done, dead, queued) = progress(t, embedder)?;
        (queued == 0 && done + dead == total).then_some((done, dead))
    })
}

/// Waits until no refresh-embeddings run is still going (a run's details are written when its
/// pass ends, a moment after its last row).
fn passes_finished() {
    wait_for("the refresh runs to be recorded", Duration::from_secs(30), || {
        let running: i64 = admin()
            .query_one("select count(*) from quantops.job_runs where job = 'refresh-embeddings' and status = 'running' and started_at > now() - interval '2 minutes'", &[])
            .unwrap()
            .get(0);
        (running == 0).then_some(())
    });
}

fn history_rows(t: &str) -> i64 {
    let mut c = admin();
    c.query_one(
        "select count(*) from quantops.signal_embedding_history h join quantops.signal_embeddings s on s.id = h.signal_id where s.strategy = $1",
        &[&t],
    )
    .unwrap()
    .get(0)
}

#[test]
fn concurrent_callers_and_the_worker_never_embed_a_row_twice() {
    use_features_embedder();
    let t = tag();
    let mut c = admin();
    // 20,000 rows at once; the enqueue trigger wakes the worker at commit, and four callers race it
    // (the worker takes at most 10,000 rows a transaction, so the callers always find rows to take)
    c.execute(
        "insert into quantops.signal_embeddings (strategy, symbol, as_of, features) \
         select $1, 'S' || g, now(), jsonb_build_object('momentum_12_1', g * 0.0001, 'volatility_20d', 0.3, \
                'zscore_5d', (g % 7) - 3, 'volume_ratio', 1 + (g % 5) * 0.1, 'carry', 0.01) \
         from generate_series(1, 20000) g",
        &[&t],
    )
    .unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let mut done = 0i64;
                loop {
                    let r = request(&Who::ServiceRole, "select done, remaining from quantops.refresh_embeddings(batch_size => 100)", &[])
                        .unwrap();
                    done += r[0].get::<_, i64>(0);
                    if r[0].get::<_, i64>(1) == 0 {
                        break;
                    }
                }
                done
            })
        })
        .collect();
    let by_callers: i64 = callers.into_iter().map(|h| h.join().unwrap()).sum();
    let (done, dead) = wait_settled(&t, "it-features", 20000, 120);
    assert_eq!((done, dead), (20000, 0));
    // a row embedded twice would have left its first embedding in the history
    assert_eq!(history_rows(&t), 0, "a row was embedded twice");
    assert!(by_callers > 0, "the callers took part");
    // every row's hash is the hash of its inputs
    let bad: i64 = c
        .query_one(
            "select count(*) from quantops.signal_embeddings where strategy = $1 and input_hash is distinct from \
             quantops.embedding_input_hash(embedder, embedder_version::int, strategy, symbol, features, series, rationale, tags)",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(bad, 0);
}

#[test]
fn model_migration_keeps_old_vectors_searchable_and_asof_reads_the_past() {
    let v1 = use_features_embedder();
    let t = tag();
    insert_signals(&t, &(0..20).map(|i| format!("row {i}")).collect::<Vec<_>>());
    wait_settled(&t, "it-features", 20, 30);
    let mut c = admin();
    let before: String = c.query_one("select now()::text", &[]).unwrap().get(0);
    std::thread::sleep(Duration::from_millis(50));
    // a new version: every row is stale, and the old vectors stay searchable meanwhile
    let mut tx = c.transaction().unwrap();
    let v2: i32 = tx
        .query_one(
            "select quantops.register_embedder('it-features', 'features', 384, \
             jsonb_set($1::text::jsonb, '{seed}', to_jsonb(extract(epoch from now())::bigint)))",
            &[&FEATURES],
        )
        .unwrap()
        .get(0);
    let r: serde_json::Value =
        serde_json::from_str(&tx.query_one("select quantops.set_embedder('it-features', $1)::text", &[&v2]).unwrap().get::<_, String>(0))
            .unwrap();
    assert!(r["enqueued"].as_i64().unwrap() >= 20);
    let searchable: i64 = tx
        .query_one(
            "select count(*) from (select id from quantops.signal_embeddings where strategy = $1 and embedding is not null \
             order by embedding <=> (select embedding from quantops.signal_embeddings where strategy = $1 limit 1) limit 20) x",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(searchable, 20, "old vectors must stay searchable during a migration");
    tx.commit().unwrap();
    // the worker replaces them
    wait_for("the migration to finish", Duration::from_secs(60), || {
        let mut c = admin();
        let n: i64 = c
            .query_one(
                "select count(*) from quantops.signal_embeddings where strategy = $1 and embedder_version = $2::text",
                &[&t, &v2.to_string()],
            )
            .unwrap()
            .get(0);
        (n == 20).then_some(())
    });
    assert_eq!(history_rows(&t), 20);
    // as of before the migration, each row's embedding is the version-1 one; now it is version 2
    let rows = c
        .query(
            "select (select a.embedder_version from quantops.embedding_asof(s.id, $2::text::timestamptz) a), \
                    (select a.embedder_version from quantops.embedding_asof(s.id, now()) a) \
             from quantops.signal_embeddings s where s.strategy = $1",
            &[&t, &before],
        )
        .unwrap();
    for r in rows {
        assert_eq!(r.get::<_, Option<String>>(0), Some(v1.to_string()));
        assert_eq!(r.get::<_, Option<String>>(1), Some(v2.to_string()));
    }
    // and before the first embedding there was none: no look-ahead
    let n: i64 = c
        .query_one(
            "select count(*) from quantops.signal_embeddings s, quantops.embedding_asof(s.id, s.created_at - interval '1 day') a where s.strategy = $1",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // a user reads only their own history
    let r = request(&Who::User(USER_B.into()), "select count(*) from quantops.signal_embedding_history h join quantops.signal_embeddings s on s.id = h.signal_id where s.strategy = $1", &[&t]).unwrap();
    assert_eq!(r[0].get::<_, i64>(0), 0);
    let r = request(&Who::User(USER_A.into()), "select count(*) from quantops.signal_embedding_history h where h.signal_id in (select id from quantops.signal_embeddings where strategy = $1)", &[&t]).unwrap();
    assert_eq!(r[0].get::<_, i64>(0), 20);
}

#[test]
fn http_provider_failures_end_embedded_or_dead_lettered() {
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    let mut rationales: Vec<String> = (0..24).map(|i| format!("{t} plain {i}")).collect();
    for m in ["[400]", "[400]", "[baddim]", "[nan]", "[429x2]", "[429x2]", "[500x1]", "[500x1]", "[slowx1]", "[always500]"] {
        rationales.push(format!("{t} {m} {}", rationales.len()));
    }
    insert_signals(&t, &rationales);
    let v = use_http_embedder(&fake, 8, r#""timeout_ms": 1500, "max_attempts": 3"#);
    let name = "it-http";
    let (done, dead) = wait_settled(&t, name, rationales.len() as i64, 120);
    assert_eq!(done + dead, 34, "no row lost");
    let mut c = admin();
    if dead != 5 {
        let rows = c
            .query(
                "select s.rationale || ': ' || f.error_class || ' after ' || f.attempts || ': ' || f.error from quantops.embedding_failures f \
                 join quantops.signal_embeddings s on s.id = f.signal_id where s.strategy = $1",
                &[&t],
            )
            .unwrap();
        let why: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        panic!("400 x2, baddim, nan, always500 are dead letters; the rest recover; got:\n{}", why.join("\n"));
    }
    let failures = c
        .query(
            "select s.rationale, f.error_class, f.error, f.attempts from quantops.embedding_failures f \
             join quantops.signal_embeddings s on s.id = f.signal_id where s.strategy = $1 order by s.rationale",
            &[&t],
        )
        .unwrap();
    for f in &failures {
        let (r, class, err, attempts): (String, String, String, i32) = (f.get(0), f.get(1), f.get(2), f.get(3));
        if r.contains("[always500]") {
            assert_eq!((class.as_str(), attempts), ("retries_exhausted", 3), "{r}: {err}");
            assert!(err.contains("500"), "{err}");
        } else {
            assert_eq!(class, "permanent", "{r}: {err}");
            let expect = if r.contains("[400]") {
                "400"
            } else if r.contains("[baddim]") {
                "383 dimensions, expected 384"
            } else {
                "invalid json"
            };
            assert!(err.contains(expect), "{r}: {err}");
        }
    }
    // the recovered rows needed more than one attempt, and hold exactly the provider's vector
    let rows = c
        .query(
            "select rationale, embedder_version, input_hash = quantops.embedding_input_hash(embedder, embedder_version::int, strategy, symbol, features, series, rationale, tags) \
             from quantops.signal_embeddings where strategy = $1 and embedder = $2",
            &[&t, &name],
        )
        .unwrap();
    assert_eq!(rows.len(), 29);
    for r in rows {
        assert_eq!(r.get::<_, Option<String>>(1), Some(v.to_string()));
        assert!(r.get::<_, bool>(2), "{} holds a vector of other inputs", r.get::<_, String>(0));
    }
    let stats = fake.stats();
    // the failure paths were taken (how often depends on how the batches were split)
    for status in ["429", "400", "500"] {
        assert!(stats["by_status"][status].as_i64().unwrap_or(0) >= 1, "no {status} served: {}", stats["by_status"]);
    }
    // splitting isolated the bad rows: every plain row was embedded (returned) at least once,
    // and the provider never saw a row again once it was written
    for i in 0..24 {
        let n = stats["texts"][format!("{t} plain {i}")].as_i64().unwrap_or(0);
        assert!(n >= 1, "plain {i} never embedded: {stats}");
    }
    // retry_failed puts the dead letters back; permanent ones fail again, none is lost
    let n: i64 = c.query_one("select quantops.retry_failed('it-http', 'permanent')", &[]).unwrap().get(0);
    assert!(n >= 4);
    let (done2, dead2) = wait_settled(&t, name, 34, 60);
    assert_eq!((done2, dead2), (29, 5));
    let s: serde_json::Value =
        serde_json::from_str(&c.query_one("select to_jsonb(e)::text from quantops.embedding_status e", &[]).unwrap().get::<_, String>(0))
            .unwrap();
    assert_eq!(s["active_embedder"]["name"], name);
    assert!(s["failures"]["permanent"].as_i64().unwrap() >= 4);
}

#[test]
fn a_row_edited_during_its_lease_is_never_overwritten_with_the_old_vector() {
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    use_http_embedder(&fake, 64, r#""timeout_ms": 8000"#);
    insert_signals(&t, &[format!("{t} [sleep3] original")]);
    // wait until the worker holds the lease (the provider is answering slowly)
    let mut c = admin();
    wait_for("the lease", Duration::from_secs(30), || {
        let mut c = admin();
        c.query_opt(
            "select 1 from quantops.embedding_queue q join quantops.signal_embeddings s on s.id = q.signal_id \
             where s.strategy = $1 and q.lease_until > now()",
            &[&t],
        )
        .unwrap()
        .map(|_| ())
    });
    c.execute("update quantops.signal_embeddings set rationale = $2 where strategy = $1", &[&t, &format!("{t} edited")]).unwrap();
    let (done, dead) = wait_settled(&t, "it-http", 1, 60);
    assert_eq!((done, dead), (1, 0));
    let ok: bool = c
        .query_one(
            "select input_hash = quantops.embedding_input_hash(embedder, embedder_version::int, strategy, symbol, features, series, rationale, tags) \
             from quantops.signal_embeddings where strategy = $1",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert!(ok, "the row holds the vector of its old input");
    // the provider did embed the old text, but that vector was never written
    let stats = fake.stats();
    assert_eq!(stats["texts"][format!("{t} [sleep3] original")], 1);
    assert_eq!(stats["texts"][format!("{t} edited")], 1);
    assert_eq!(history_rows(&t), 0, "the old vector was written, then replaced");
}

#[test]
fn kill_9_of_the_worker_mid_batch_loses_nothing_and_embeds_nothing_twice() {
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    let rationales: Vec<String> = (0..16).map(|i| format!("{t} [sleep2] {i}")).collect();
    use_http_embedder(&fake, 4, r#""timeout_ms": 3000"#);
    wait_for("the provider to catch up with the other rows", Duration::from_secs(120), || {
        (scalar_i64(&mut admin(), "select count(*) from quantops.embedding_queue") == 0).then_some(())
    });
    insert_signals(&t, &rationales);
    wait_for("a leased batch", Duration::from_secs(30), || {
        let mut c = admin();
        c.query_opt(
            "select 1 from quantops.embedding_queue q join quantops.signal_embeddings s on s.id = q.signal_id \
             where s.strategy = $1 and q.lease_until > now() limit 1",
            &[&t],
        )
        .unwrap()
        .map(|_| ())
    });
    let pid: i32 = admin().query_one("select pid from pg_stat_activity where backend_type = 'quantops scheduler'", &[]).unwrap().get(0);
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    // the postmaster resets every backend and restarts the worker; the lease runs out and the
    // batch is taken again
    let (done, dead) = wait_settled(&t, "it-http", 16, 120);
    assert_eq!((done, dead), (16, 0), "a row was lost");
    assert_eq!(history_rows(&t), 0, "a row was embedded twice");
}

/// Every stored vector of strategy `t` was made from the row's current inputs.
fn stale_vectors(t: &str) -> i64 {
    let mut c = admin();
    c.query_one(
        "select count(*) from quantops.signal_embeddings s where s.strategy = $1 and s.embedding is not null \
           and s.input_hash is distinct from quantops.embedding_input_hash(s.embedder, s.embedder_version::int, s.strategy, \
                 s.symbol, s.features, s.series, s.rationale, s.tags)",
        &[&t],
    )
    .unwrap()
    .get(0)
}

#[test]
fn requests_run_concurrently_up_to_the_embedders_concurrency() {
    // requests that take 1 s each: the worker keeps 3 out at once, never more
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    let version = use_http_embedder(&fake, 4, r#""timeout_ms": 5000, "concurrency": 3"#);
    wait_for("the provider to catch up with the other rows", Duration::from_secs(120), || {
        (scalar_i64(&mut admin(), "select count(*) from quantops.embedding_queue") == 0).then_some(())
    });
    let rationales: Vec<String> = (0..24).map(|i| format!("{t} concurrent {i} [lag1000]")).collect();
    insert_signals_at_once(&t, &rationales);
    // embedding_status shows the requests out and their limit while they are out
    let (out, limit) = wait_for("three requests out, as embedding_status shows", Duration::from_secs(10), || {
        let r = admin().query_one("select requests_in_flight, concurrency from quantops.embedding_status", &[]).ok()?;
        let (out, limit): (i32, i32) = (r.get(0), r.get(1));
        (out == 3).then_some((out, limit))
    });
    assert_eq!((out, limit), (3, 3));
    let (done, dead) = wait_settled(&t, "it-http", 24, 60);
    assert_eq!((done, dead), (24, 0));
    // this test's requests only: a request the worker gave up on earlier (a timeout while the
    // other rows drained) may still be sleeping in the provider
    assert_eq!(fake.stats()["lag_in_flight_max"]["[lag1000]"].as_i64(), Some(3), "requests in flight at once");
    assert_eq!(stale_vectors(&t), 0);
    // the run says how many it had out at once (recorded when its pass ends, a moment after the
    // last row is written)
    passes_finished();
    let peak: Option<i64> = admin()
        .query_one(
            "select max((details->>'peak_in_flight')::int8) from quantops.job_runs \
             where job = 'refresh-embeddings' and runner = 'worker' and details->>'embedder' = 'it-http' \
               and details->>'version' = $1::int4::text",
            &[&version],
        )
        .unwrap()
        .get(0);
    assert_eq!(peak, Some(3));
    // a 429 with Retry-After: 1 slows the embedder down, and embedding_status says how long it waited
    insert_signals_at_once(&t, &[format!("{t} throttled [429x1]")]);
    let (done, dead) = wait_settled(&t, "it-http", 25, 60);
    assert_eq!((done, dead), (25, 0));
    let waited: Option<i64> = admin().query_one("select last_rate_limit_wait_ms from quantops.embedding_status", &[]).unwrap().get(0);
    assert_eq!(waited, Some(1000));
    // a concurrency the worker cannot honour is refused when the embedder is registered
    let r = request(
        &Who::ServiceRole,
        "select quantops.register_embedder('it-http-bad', 'http', 384, $1::text::jsonb)",
        &[&format!(r#"{{"url": "{}", "model": "m", "concurrency": 0}}"#, fake.url())],
    );
    expect_err(r, "22023", "concurrency must be between 1 and 64");
}

#[test]
fn kill_9_with_four_requests_in_flight_loses_nothing_and_writes_nothing_twice_or_stale() {
    // 4 requests of 4 rows out at once, each answered after 2 s; two rows are edited while out,
    // then the worker is killed: every row ends embedded once, from its current inputs
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    use_http_embedder(&fake, 4, r#""timeout_ms": 3000, "concurrency": 4"#);
    wait_for("the provider to catch up with the other rows", Duration::from_secs(120), || {
        (scalar_i64(&mut admin(), "select count(*) from quantops.embedding_queue") == 0).then_some(())
    });
    let rationales: Vec<String> = (0..16).map(|i| format!("{t} in flight {i} [lag2000]")).collect();
    insert_signals_at_once(&t, &rationales);
    wait_for("16 rows leased in 4 requests", Duration::from_secs(30), || {
        let n: i64 = admin()
            .query_one(
                "select count(*) from quantops.embedding_queue q join quantops.signal_embeddings s on s.id = q.signal_id \
                 where s.strategy = $1 and q.lease_until > now()",
                &[&t],
            )
            .ok()?
            .get(0);
        (n == 16).then_some(())
    });
    // the provider sees the four (counting only this test's requests: a request another client
    // gave up on may still be sleeping in the provider)
    wait_for("the provider answering four requests at once", Duration::from_secs(5), || {
        (fake.stats()["lag_in_flight"]["[lag2000]"].as_i64() == Some(4)).then_some(())
    });
    admin()
        .execute(
            "update quantops.signal_embeddings set rationale = rationale || ' (edited)' where strategy = $1 and symbol in ('SYM0', 'SYM5')",
            &[&t],
        )
        .unwrap();
    let pid: i32 = admin().query_one("select pid from pg_stat_activity where backend_type = 'quantops scheduler'", &[]).unwrap().get(0);
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let (done, dead) = wait_settled(&t, "it-http", 16, 120);
    assert_eq!((done, dead), (16, 0), "a row was lost");
    assert_eq!(history_rows(&t), 0, "a row was embedded twice");
    assert_eq!(stale_vectors(&t), 0, "a vector of an old input was written");
    let edited: i64 = admin()
        .query_one("select count(*) from quantops.signal_embeddings where strategy = $1 and rationale like '%(edited)'", &[&t])
        .unwrap()
        .get(0);
    assert_eq!(edited, 2);
}

#[test]
fn the_api_key_is_sent_but_never_stored_or_logged() {
    let fake = Fake::start();
    let _restore = Restore;
    let key = format!("sk-test-{}", &new_user()[..12]);
    // the key lives in a file only the postgres user reads; the setting holds its path
    let path = format!("{}/embedding-api-key", cluster_dir());
    let path = path.as_str();
    std::fs::write(path, format!("{key}\n")).unwrap();
    // the server's OS user (its uid differs inside the root that runs PostgreSQL 17)
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");
    assert!(Command::new("bash").args([cluster, "own", path]).status().unwrap().success());
    assert!(Command::new("chmod").args(["600", path]).status().unwrap().success());
    let mut c = admin();
    c.batch_execute(&format!("alter system set quantops.embedding_api_key_file = '{path}'")).unwrap();
    c.batch_execute("select pg_reload_conf()").unwrap();
    let t = tag();
    use_http_embedder(&fake, 64, r#""timeout_ms": 3000"#);
    insert_signals(&t, &[format!("{t} keyed")]);
    wait_settled(&t, "it-http", 1, 60);
    assert_eq!(fake.stats()["authorization"], format!("Bearer {key}"));
    // the setting is for superusers only
    let r = request(&Who::ServiceRole, "select current_setting('quantops.embedding_api_key_file')", &[]);
    assert_eq!(sqlstate(&r).as_deref(), Some("42501"));
    let n: i64 = c
        .query_one(
            "select (select count(*) from quantops.audit_log where args::text like '%' || $1 || '%' or detail::text like '%' || $1 || '%') + \
                    (select count(*) from quantops.job_runs where error like '%' || $1 || '%' or details::text like '%' || $1 || '%') + \
                    (select count(*) from quantops.embedders where params::text like '%' || $1 || '%') + \
                    (select count(*) from quantops.embedding_failures where error like '%' || $1 || '%')",
            &[&key],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the API key is in a table");
    let log = std::fs::read_to_string(format!("{}/postgres.log", cluster_dir())).unwrap_or_default();
    assert!(!log.contains(&key), "the API key is in the server log");
    c.batch_execute("alter system reset quantops.embedding_api_key_file").unwrap();
    c.batch_execute("select pg_reload_conf()").unwrap();
    // a key in the params is refused outright
    let r = request(
        &Who::ServiceRole,
        "select quantops.register_embedder('leaky', 'http', 384, '{\"url\": \"http://127.0.0.1:1/v1/embeddings\", \"model\": \"m\", \"api_key\": \"sk-x\"}')",
        &[],
    );
    expect_err(r, "22023", "an API key never goes into a readable table");
}

#[test]
fn embedding_errors_have_their_sqlstates_and_change_nothing() {
    use_features_embedder();
    let svc = Who::ServiceRole;
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("null name", "select quantops.register_embedder(null, 'features', 384)", "22004", "name must not be null"),
        (
            "hostile name",
            "select quantops.register_embedder('x\"; drop table quantops.jobs; --', 'features', 384)",
            "22023",
            "invalid name",
        ),
        ("unknown kind", "select quantops.register_embedder('x', 'bert', 384)", "22023", "unknown embedder kind \"bert\""),
        ("bad params", "select quantops.register_embedder('x', 'features', 384, '{\"features\": []}')", "22023", "invalid embedder"),
        (
            "wrong dims",
            "select quantops.register_embedder('x', 'hashing', 128)",
            "55000",
            "embedder dims 128 do not match the configured dims (384)",
        ),
        ("unknown embedder", "select quantops.set_embedder('nope')", "42704", "embedder \"nope\" does not exist"),
        ("unknown version", "select quantops.set_embedder('it-features', 999)", "42704", "version 999 does not exist"),
        ("bad batch size", "select * from quantops.refresh_embeddings(batch_size => 0)", "22023", "invalid batch_size"),
        ("bad error class", "select quantops.retry_failed(error_class => 'sometimes')", "22023", "invalid error_class"),
        ("anon refresh", "select * from quantops.refresh_embeddings()", "42501", "permission denied"),
    ];
    let mut c = admin();
    let before: (i64, i64) = {
        let r = c.query_one("select (select count(*) from quantops.embedders), (select count(*) from quantops.audit_log)", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    for (what, sql, state, msg) in cases {
        let who = if what.starts_with("anon") { Who::Anon } else { svc.clone() };
        let r = request(&who, sql, &[]);
        match r {
            Ok(_) => panic!("{what}: expected {state}"),
            Err(e) => {
                let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
                assert_eq!(db.code().code(), state, "{what}: {}", db.message());
                assert!(db.message().contains(msg), "{what}: {:?} lacks {msg:?}", db.message());
            }
        }
    }
    let after: (i64, i64) = {
        let r = c.query_one("select (select count(*) from quantops.embedders), (select count(*) from quantops.audit_log)", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(before, after);
    // with an http embedder active, SQL refuses to call the provider inside a transaction
    let fake = Fake::start();
    let _restore = Restore;
    use_http_embedder(&fake, 64, r#""timeout_ms": 1000"#);
    let e = request(&svc, "select * from quantops.refresh_embeddings()", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert!(db.detail().unwrap().contains("never inside an open transaction"));
}

/// Puts the cluster's allowlist back (127.0.0.1), whatever a test did to it.
struct RestoreAllowlist;

impl Drop for RestoreAllowlist {
    fn drop(&mut self) {
        let mut a = admin();
        let _ = a.batch_execute("alter system set quantops.embedding_allowed_hosts = '127.0.0.1'");
        let _ = a.batch_execute("select pg_reload_conf()");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The worker is a superuser process holding the provider's key: whoever may register an
/// embedder never chooses where it connects. quantops.embedding_allowed_hosts (superuser-only,
/// reloaded) names the hosts; a key goes only over https or to loopback; the worker checks again
/// before every request.
#[test]
fn egress_only_to_allowed_hosts_and_keys_only_over_https() {
    let fake = Fake::start();
    let _restore = Restore;
    let _allowlist = RestoreAllowlist;
    let sr = Who::ServiceRole;
    let name = format!("egress-{}", &new_user()[..8]);
    let reg = |url: &str, extra: &str| {
        request(
            &sr,
            &format!("select quantops.register_embedder('{name}', 'http', 384, '{{\"url\": \"{url}\", \"model\": \"m\"{extra}}}')"),
            &[],
        )
    };
    // not on the allowlist (the cluster allows 127.0.0.1 only): 42501, nothing registered
    expect_err(reg("http://169.254.169.254/latest/meta-data", ""), "42501", "not in quantops.embedding_allowed_hosts");
    expect_err(reg("https://api.openai.com/v1/embeddings", ""), "42501", "\"api.openai.com\"");
    // no credentials in a url
    expect_err(reg("http://user:pw@127.0.0.1:1/v1/embeddings", ""), "22023", "credentials");
    // a host on the allowlist that is not this machine gets a key only over https
    let mut a = admin();
    let allow = |hosts: &str| {
        let mut a = admin();
        a.batch_execute(&format!("alter system set quantops.embedding_allowed_hosts = '{hosts}'")).unwrap();
        a.batch_execute("select pg_reload_conf()").unwrap();
    };
    allow("127.0.0.1, embed.internal");
    std::thread::sleep(Duration::from_millis(300));
    expect_err(reg("http://embed.internal/v1/embeddings", ", \"api_key_secret\": \"quantops_openai\""), "22023", "only over https");
    // the superuser worker reads the secret: only quantops_ secrets may be named, not any other
    expect_err(reg("https://embed.internal/v1/embeddings", ", \"api_key_secret\": \"stripe_live\""), "22023", "start with quantops_");
    let ok = reg("https://embed.internal/v1/embeddings", ", \"api_key_secret\": \"quantops_openai\"");
    assert!(ok.is_ok(), "{ok:?}");
    allow("127.0.0.1");
    let n: i64 = a.query_one("select count(*) from quantops.embedders where name = $1", &[&name]).unwrap().get(0);
    assert_eq!(n, 1, "only the https registration went in");
    // the worker checks at every request: with the fake's host taken off the list, nothing is
    // sent, the run fails naming the host, and the rows stay queued
    let t = tag();
    let params = format!(r#"{{"url": "{}", "model": "fake-embed-1", "template": "{{rationale}}", "timeout_ms": 2000}}"#, fake.url());
    a.query_one("select quantops.register_embedder('it-http', 'http', 384, $1::text::jsonb)", &[&params]).unwrap();
    insert_signals(&t, &[format!("{t} a"), format!("{t} b")]);
    allow("api.openai.com");
    std::thread::sleep(Duration::from_millis(500));
    a.query_one("select quantops.set_embedder('it-http')", &[]).unwrap();
    let sent_before = fake.stats()["requests"].as_i64().unwrap();
    let err: String = wait_for("a failed refresh naming the host", Duration::from_secs(30), || {
        admin()
            .query_opt(
                "select error from quantops.job_runs where job = 'refresh-embeddings' and status = 'failed' \
                 and error like '%not in quantops.embedding_allowed_hosts%' and started_at > now() - interval '1 minute' limit 1",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    });
    assert!(err.contains("\"127.0.0.1\""), "{err}");
    assert_eq!(fake.stats()["requests"].as_i64().unwrap(), sent_before, "a request went to a host no longer allowed");
    let (done, _dead, queued) = progress(&t, "it-http").expect("no reset here");
    assert_eq!((done, queued), (0, 2));
    allow("127.0.0.1");
}

/// A provider's answer never reaches a table (service_role reads the dead letters): only its
/// status, length and a digest; and a redirect is not followed (the allowlist names hosts).
#[test]
fn provider_bodies_are_not_stored_and_redirects_are_not_followed() {
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    use_http_embedder(&fake, 8, r#""timeout_ms": 2000, "max_attempts": 2"#);
    insert_signals(&t, &[format!("{t} [leak]"), format!("{t} [redirect]"), format!("{t} fine")]);
    let (done, dead) = wait_settled(&t, "it-http", 3, 60);
    assert_eq!((done, dead), (1, 2));
    let mut c = admin();
    let rows = c
        .query(
            "select s.rationale, f.error from quantops.embedding_failures f join quantops.signal_embeddings s on s.id = f.signal_id \
             where s.strategy = $1 order by 1",
            &[&t],
        )
        .unwrap();
    for r in &rows {
        let (what, err): (String, String) = (r.get(0), r.get(1));
        assert!(!err.contains("SECRET") && !err.contains("10.1.2.3"), "{what}: the body was stored: {err}");
        if what.contains("[leak]") {
            assert!(err.contains("provider answered 400 (body: ") && err.contains("sha256 "), "{err}");
        } else {
            assert!(err.contains("307") && err.contains("redirect"), "{err}");
        }
    }
    assert_eq!(fake.stats().get("elsewhere").and_then(|v| v.as_i64()).unwrap_or(0), 0, "the redirect was followed");
}

/// A fast shutdown (SIGTERM) in the middle of a slow provider request stops the worker within a
/// second; the leased rows are given back and embedded after the restart.
#[test]
fn sigterm_during_a_slow_request_stops_the_worker_within_a_second() {
    let fake = Fake::start();
    let _restore = Restore;
    let t = tag();
    use_http_embedder(&fake, 8, r#""timeout_ms": 60000"#);
    let slow = format!("{t} [sleep30] slow");
    insert_signals(&t, std::slice::from_ref(&slow));
    wait_for("the slow request in flight", Duration::from_secs(60), || {
        (fake.stats()["seen"][&slow].as_i64().unwrap_or(0) >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let pid: i32 = admin().query_one("select pid from pg_stat_activity where backend_type = 'quantops scheduler'", &[]).unwrap().get(0);
    // after the restart the worker stays idle until the queue is read (the setting takes effect
    // at the start); put back whatever happens
    struct Enable;
    impl Drop for Enable {
        fn drop(&mut self) {
            let root = env!("CARGO_MANIFEST_DIR");
            let _ = Command::new("bash").args([&format!("{root}/scripts/cluster.sh"), "start"]).status();
            let mut a = admin();
            let _ = a.batch_execute("alter system reset quantops.enabled");
            let _ = a.batch_execute("select pg_reload_conf()");
        }
    }
    let _enable = Enable;
    admin().batch_execute("alter system set quantops.enabled = off").unwrap();
    let t0 = std::time::Instant::now();
    let root = env!("CARGO_MANIFEST_DIR");
    let stop = std::thread::spawn(move || Command::new("bash").args([&format!("{root}/scripts/cluster.sh"), "stop", "fast"]).status());
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    assert!(stop.join().unwrap().unwrap().success());
    assert!(took < Duration::from_secs(1), "the worker took {took:?} to stop after SIGTERM");
    assert!(Command::new("bash").args([&format!("{root}/scripts/cluster.sh"), "start"]).status().unwrap().success());
    // the row was given back, not dead-lettered, and its attempt did not count
    let (attempts, dead): (i32, i64) = {
        let r = admin()
            .query_one(
                "select coalesce(max(q.attempts), -1), (select count(*) from quantops.embedding_failures f join quantops.signal_embeddings s \
                   on s.id = f.signal_id where s.strategy = $1) \
                 from quantops.embedding_queue q join quantops.signal_embeddings s on s.id = q.signal_id where s.strategy = $1",
                &[&t],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((attempts, dead), (0, 0), "the interrupted row is queued again with its attempts as before");
}

/// Registers (once) and activates the local model (all-MiniLM-L6-v2, which scripts/bootstrap.sh
/// installs under the cluster's quantops.model_dir), embedding the rationale alone.
fn use_model_embedder() -> i32 {
    let mut c = admin();
    let v: Option<i32> = c.query_one("select max(version) from quantops.embedders where name = 'it-model'", &[]).unwrap().get(0);
    let v = match v {
        Some(v) => v,
        None => c
            .query_one(
                "select quantops.register_embedder('it-model', 'model', 384, '{\"model\": \"all-MiniLM-L6-v2\", \"template\": \"{rationale}\"}')",
                &[],
            )
            .unwrap()
            .get(0),
    };
    c.execute("select quantops.set_embedder('it-model', $1)", &[&v]).unwrap();
    v
}

#[test]
fn the_local_model_finds_paraphrases_that_share_no_words() {
    let _restore = Restore;
    let t = tag();
    // while another embedder is active, embed_text refuses, and says why
    use_features_embedder();
    expect_err(request(&Who::User(USER_A.into()), "select quantops.embed_text('gold')", &[]), "55000", "is not a local model");
    use_model_embedder();
    let memories = [
        "Petroleum costs jumped when the cartel slashed output",
        "Monetary authorities hiked borrowing costs, aiming at rising consumer prices",
        "Shares of software companies plunged while traders dumped high-valuation equities",
        "Bullion climbed; people wanted protection during turmoil",
        "This firm posted its best three-month profit ever",
    ];
    let queries = [
        "Crude oil prices surged after OPEC announced production cuts",
        "The central bank raised interest rates to fight inflation",
        "Tech stocks tumbled as investors fled growth names",
        "Gold rallied because buyers sought a safe haven",
        "The company reported record quarterly earnings",
    ];
    insert_signals_at_once(&t, &memories.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    // the embedder worker (not the scheduler) embeds them, each from its current input
    let (done, dead) = wait_settled(&t, "it-model", 5, 60);
    assert_eq!((done, dead), (5, 0));
    assert_eq!(stale_vectors(&t), 0);
    // the run is recorded when the worker's pass ends, a moment after its last row is written
    let runner: String = wait_for("the embedder worker's run of it-model recorded", Duration::from_secs(30), || {
        admin()
            .query_opt(
                "select runner from quantops.job_runs where job = 'refresh-embeddings' and details->>'embedder' = 'it-model' order by id desc limit 1",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    });
    assert_eq!(runner, "embedder worker");
    // an agent searches its memory with a text: each query finds its paraphrase first
    for (q, want) in queries.iter().zip(memories) {
        let rows = request(
            &Who::User(USER_A.into()),
            "select rationale from quantops.match_signals(quantops.embed_text($1), 1, jsonb_build_object('strategy', $2::text))",
            &[q, &t],
        )
        .unwrap();
        let got: String = rows[0].get(0);
        assert_eq!(got, want, "the query {q:?} found {got:?}");
    }
    // embed_text gives the stored vector of the same text (the worker's rows and the ad-hoc
    // path are the same model): cosine 1
    let cos: f64 = admin()
        .query_one(
            "select 1 - (s.embedding <=> quantops.embed_text(s.rationale)) from quantops.signal_embeddings s where s.strategy = $1 limit 1",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert!(cos > 0.999999, "cosine {cos}");
    // NULL in, NULL out; too long a text is refused (22023); anon may not call it (42501)
    let null: Option<pgvector::Vector> = admin().query_one("select quantops.embed_text(null)", &[]).unwrap().get(0);
    assert!(null.is_none());
    expect_err(
        request(&Who::User(USER_A.into()), "select quantops.embed_text(repeat('x', 20000))", &[]),
        "22023",
        "longer than embed_text takes",
    );
    expect_err(request(&Who::Anon, "select quantops.embed_text('gold')", &[]), "42501", "permission denied");
    // the model lives in the embedder worker only: a path is never a model name (22023), and a
    // model folder that is not there is refused when the embedder is registered (55000)
    expect_err(
        request(&Who::ServiceRole, "select quantops.register_embedder('it-model-bad', 'model', 384, '{\"model\": \"../etc\"}')", &[]),
        "22023",
        "must be the name of a folder",
    );
    expect_err(
        request(
            &Who::ServiceRole,
            "select quantops.register_embedder('it-model-bad', 'model', 384, '{\"model\": \"no-such-model\"}')",
            &[],
        ),
        "55000",
        "no readable config.json",
    );
    expect_err(
        request(
            &Who::ServiceRole,
            "select quantops.register_embedder('it-model-bad', 'model', 768, '{\"model\": \"all-MiniLM-L6-v2\"}')",
            &[],
        ),
        "22023",
        "gives 384 dimensions, not 768",
    );
    // a model that pools by max (its 1_Pooling/config.json says so): quantops would compute other
    // vectors than the model's, so it is refused (0A000), and nothing is registered
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models");
    let maxpool = models.join("it-maxpool");
    std::fs::create_dir_all(maxpool.join("1_Pooling")).unwrap();
    std::fs::copy(models.join("all-MiniLM-L6-v2/config.json"), maxpool.join("config.json")).unwrap();
    std::fs::write(
        maxpool.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true}"#,
    )
    .unwrap();
    expect_err(
        request(&Who::ServiceRole, "select quantops.register_embedder('it-model-bad', 'model', 384, '{\"model\": \"it-maxpool\"}')", &[]),
        "0A000",
        "pools by max",
    );
    assert_eq!(scalar_i64(&mut admin(), "select count(*) from quantops.embedders where name = 'it-model-bad'"), 0);
    let workers: i64 = scalar_i64(&mut admin(), "select count(*) from pg_stat_activity where backend_type = 'quantops embedder'");
    assert_eq!(workers, 1);
}
