//! The backtest runner against the running cluster (scripts/cluster.sh): market data refused
//! when bad, run_backtest and run_backtest_grid as Supabase's roles call them (RLS decides what a
//! user's backtest reads), idempotent run ids, cancellation, the scheduled runner.

mod common;
use common::*;
use std::time::Duration;

/// Seeded GBM daily bars for `symbol` (shared: written as service_role), `n` of them.
fn shared_bars(symbol: &str, seed: i32, n: i32) {
    let r = request(
        &Who::ServiceRole,
        "insert into quantops.bars (symbol, ts, open, high, low, close, volume) \
         select $1, timestamptz '2015-01-01' + (g - 1) * interval '1 day', o, greatest(o, c) * 1.002, least(o, c) * 0.998, c, 1000 \
         from (select g, c, c * (1 + 0.003 * sin(g * 7.3 + $2::float8)) as o \
               from (select g, 100 * exp(sum(0.0126 * sin(g * 1.37 + $2::float8 * 0.71) + 0.008 * sin(g / 9.0 + $2::float8) + 0.0004) over (order by g)) as c \
                     from generate_series(1, $3) g) x) y",
        &[&symbol, &(seed as f64), &n],
    );
    assert!(r.is_ok(), "{:?}", r.err());
}

fn count(sql: &str, p: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    admin().query_one(sql, p).unwrap().get(0)
}

#[test]
fn bad_bars_are_refused_with_their_sqlstate_and_nothing_changes() {
    let s = format!("BAD{}", &new_user()[..8]);
    shared_bars(&s, 1, 5);
    let ins = |values: &str| {
        request(
            &Who::ServiceRole,
            &format!("insert into quantops.bars (symbol, ts, open, high, low, close, available_at) values ($1, {values})"),
            &[&s],
        )
    };
    for (values, state, msg) in [
        ("'2030-01-01', 'NaN', 2, 1, 1.5, null", "23514", "bars_finite_check"),
        ("'2030-01-01', 1, 'Infinity', 1, 1.5, null", "23514", "bars_finite_check"),
        ("'2030-01-01', 1.5, 1, 2, 1.5, null", "23514", "bars_range_check"),
        ("'2030-01-01', 1.5, 2, 1, 2.5, null", "23514", "bars_range_check"),
        ("'2030-01-01', 1.5, 2, 1, 0.5, null", "23514", "bars_range_check"),
        ("'2030-01-01', 0, 0, 0, 0, null", "23514", "bars_positive_check"),
        ("'2030-01-02', 1.5, 2, 1, 1.5, '2030-01-01'", "23514", "bars_available_check"),
        ("'infinity', 1.5, 2, 1, 1.5, null", "23514", "bars_time_check"),
        // the same symbol and ts again (shared): the key
        ("'2015-01-01', 1.5, 2, 1, 1.5, null", "23505", "bars_key"),
        ("null, 1.5, 2, 1, 1.5, null", "23502", "\"ts\""),
    ] {
        expect_err(ins(values), state, msg);
    }
    assert_eq!(count("select count(*) from quantops.bars where symbol = $1", &[&s]), 5);
    // a user's own bar at the same ts is not a duplicate (it replaces the shared one for that user)
    let r = request(
        &Who::User(USER_A.into()),
        "insert into quantops.bars (symbol, ts, open, high, low, close) values ($1, '2015-01-01', 1.5, 2, 1, 1.5) returning owner::text",
        &[&s],
    )
    .unwrap();
    assert_eq!(r[0].get::<_, String>(0), USER_A);
    // ... but a user cannot write shared bars, nor another user's (RLS: 42501)
    expect_err(
        request(
            &Who::User(USER_A.into()),
            "insert into quantops.bars (symbol, ts, open, high, low, close, owner) values ($1, '2031-01-01', 1.5, 2, 1, 1.5, null)",
            &[&s],
        ),
        "42501",
        "row-level security",
    );
    let r = request(&Who::User(USER_B.into()), "delete from quantops.bars where symbol = $1 returning 1", &[&s]).unwrap();
    assert!(r.is_empty(), "B deleted rows it does not own");
    // target weights: finite, within [-1, 1], available after their ts
    for (values, msg) in [
        ("1.5, null", "target_weights_weight_check"),
        ("'NaN', null", "target_weights_weight_check"),
        ("0.5, '2014-01-01'", "target_weights_available_check"),
    ] {
        expect_err(
            request(&Who::ServiceRole, &format!("insert into quantops.target_weights (strategy, symbol, ts, weight, available_at) values ('w', $1, '2015-01-01', {values})"), &[&s]),
            "23514",
            msg,
        );
    }
    // anon reads and writes no market data
    expect_err(request(&Who::Anon, "select count(*) from quantops.bars", &[]), "42501", "permission denied");
}

#[test]
fn run_backtest_records_once_per_input_and_a_changed_bar_is_a_new_run() {
    let s = format!("RB{}", &new_user()[..8]);
    shared_bars(&s, 2, 400);
    let a = Who::User(USER_A.into());
    let call = "select run_id, owner::text, strategy, sharpe, trades, metrics from quantops.run_backtest('ma_cross', array[$1], \
                '{\"fast\": 5, \"slow\": 20}', '{\"fees\": 0.001, \"slippage\": 0.0005}')";
    let first = request(&a, call, &[&s]).unwrap();
    let run_id: String = first[0].get(0);
    assert!(run_id.starts_with("bt_"), "{run_id}");
    assert_eq!(first[0].get::<_, String>(1), USER_A, "the result is the caller's");
    assert_eq!(first[0].get::<_, String>(2), format!("ma_cross:{s}"));
    let metrics: serde_json::Value = first[0].get(5);
    assert_eq!(metrics["options"]["execution"], "next_open");
    assert_eq!(metrics["options"]["allow_same_bar"], false);
    assert_eq!(metrics["bars"], 400);
    assert!(metrics["orders"].as_i64().unwrap() > 2, "{metrics}");
    assert!(metrics["fees_paid"].as_f64().unwrap() > 0.0);
    // the same call again: the same row, nothing new
    let again = request(&a, call, &[&s]).unwrap();
    assert_eq!(again[0].get::<_, String>(0), run_id);
    assert_eq!(count("select count(*) from quantops.backtest_results where run_id = $1", &[&run_id]), 1);
    // the same inputs given differently (defaults spelled out) are the same run
    let spelled = request(
        &a,
        "select run_id from quantops.run_backtest('ma_cross', array[$1], '{\"slow\": 20, \"fast\": 5}', \
         '{\"fees\": 0.001, \"slippage\": 0.0005, \"execution\": \"next_open\", \"init_cash\": 100}')",
        &[&s],
    )
    .unwrap();
    assert_eq!(spelled[0].get::<_, String>(0), run_id);
    // another user, same shared bars: its own run (ids include the user)
    let b = request(&Who::User(USER_B.into()), call, &[&s]).unwrap();
    assert_ne!(b[0].get::<_, String>(0), run_id);
    assert_eq!(b[0].get::<_, f64>(3).to_bits(), first[0].get::<_, f64>(3).to_bits(), "same data, same sharpe");
    // a changed bar makes a new run
    request(
        &Who::ServiceRole,
        "update quantops.bars set close = close * 1.0001, high = high * 1.0001 where symbol = $1 and ts = '2015-06-01'",
        &[&s],
    )
    .unwrap();
    let changed = request(&a, call, &[&s]).unwrap();
    assert_ne!(changed[0].get::<_, String>(0), run_id);
    // A's own bar replaces the shared one in A's backtests only
    request(&a, "insert into quantops.bars (symbol, ts, open, high, low, close) select symbol, ts, open, high * 1.1, low, close * 1.1 from quantops.bars where symbol = $1 and ts = '2015-03-01'", &[&s]).unwrap();
    let own = request(&a, call, &[&s]).unwrap();
    let own_fp: serde_json::Value = own[0].get(5);
    let b2 = request(&Who::User(USER_B.into()), call, &[&s]).unwrap();
    let b_fp: serde_json::Value = b2[0].get(5);
    assert_ne!(own_fp["data_fingerprint"], b_fp["data_fingerprint"]);
    // bars that only A owns are invisible to B: 42704
    let private = format!("PV{}", &new_user()[..8]);
    request(
        &a,
        "insert into quantops.bars (symbol, ts, open, high, low, close) select $1, ts, open, high, low, close from quantops.bars where symbol = $2 and owner is null",
        &[&private, &s],
    )
    .unwrap();
    assert!(request(&a, "select quantops.run_backtest('breakout', array[$1], '{\"window\": 20}')", &[&private]).is_ok());
    expect_err(
        request(&Who::User(USER_B.into()), "select quantops.run_backtest('breakout', array[$1], '{\"window\": 20}')", &[&private]),
        "42704",
        "no bars of symbol",
    );
    // a grid as authenticated reads the same: A's private bars for A, nothing for B
    let mine = request(
        &a,
        "select count(*) from quantops.run_backtest_grid('breakout', array[$1], '{\"window\": [10, 20]}', keep => 'none')",
        &[&private],
    )
    .unwrap();
    assert_eq!(mine[0].get::<_, i64>(0), 2);
    expect_err(
        request(
            &Who::User(USER_B.into()),
            "select * from quantops.run_backtest_grid('breakout', array[$1], '{\"window\": [10, 20]}', keep => 'none')",
            &[&private],
        ),
        "42704",
        "no bars of symbol",
    );
}

#[test]
fn bad_calls_get_precise_errors_and_record_nothing() {
    let s = format!("BC{}", &new_user()[..8]);
    shared_bars(&s, 3, 120);
    let a = Who::User(USER_A.into());
    let before = count("select count(*) from quantops.backtest_results", &[]);
    let run = |args: &str| request(&a, &format!("select quantops.run_backtest({args})"), &[&s]);
    for (args, state, msg) in [
        ("'momentum', array[$1]", "22023", "unknown strategy \"momentum\""),
        ("'ma_cross', array[$1], '{\"fast\": 20, \"slow\": 5}'", "22023", "fast < slow"),
        ("'ma_cross', array[$1], '{\"fast\": 5}'", "22023", "needs \"slow\""),
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{\"execution\": \"same_close\"}'", "22023", "allow_same_bar"),
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{\"fee\": 0.1}'", "22023", "unknown option \"fee\""),
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{\"fees\": \"NaN\"}'", "22023", "must be a number"),
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{\"slippage\": 0.9}'", "22023", "slippage"),
        ("'ma_cross', array[$1, $1 || 'X'], '{\"fast\": 5, \"slow\": 20}'", "42704", "no bars of symbol"),
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{}', '2030-01-01'", "42704", "in the period"),
        ("'ma_cross', array[$1, null], '{\"fast\": 5, \"slow\": 20}'", "22004", "must not contain null"),
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{\"sizing\": \"all_in\"}', null, null, 'm', null", "22023", "together"),
        ("'target_weights', array[$1], '{\"name\": \"nothing-stored\"}'", "42704", "no target weights"),
        // linking a result to a model version (a promotion gate reads it) needs record_backtest's right
        ("'ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}', '{}', null, null, 'some-model', 1", "42501", "permission denied to link"),
    ] {
        expect_err(run(args), state, msg);
    }
    expect_err(request(&a, "select quantops.run_backtest(null, array['x'])", &[]), "22004", "strategy must not be null");
    let grid = |args: &str| request(&a, &format!("select * from quantops.run_backtest_grid({args})"), &[&s]);
    for (args, state, msg) in [
        (
            "'ma_cross', array[$1], '{\"fast\": {\"from\": 1, \"to\": 10000}, \"slow\": {\"from\": 1, \"to\": 10000}}'",
            "54000",
            "parameter sets",
        ),
        ("'ma_cross', array[$1], '{\"fast\": [50], \"slow\": [10]}'", "22023", "no parameter set"),
        ("'ma_cross', array[$1], '{\"fast\": [5], \"slow\": [10]}', keep => 'some'", "22023", "keep must be"),
        ("'ma_cross', array[$1], '{\"fast\": [5], \"slow\": [10]}', rank_by => 'luck'", "22023", "rank_by must be"),
        ("'target_weights', array[$1], '{}'", "22023", "no parameters to sweep"),
        ("'ma_cross', array[$1], null", "22004", "grid must not be null"),
    ] {
        expect_err(grid(args), state, msg);
    }
    // anon runs no backtest
    expect_err(
        request(&Who::Anon, "select quantops.run_backtest('ma_cross', array['x'], '{\"fast\": 5, \"slow\": 20}')", &[]),
        "42501",
        "permission denied",
    );
    expect_err(
        request(&Who::Anon, "select * from quantops.run_backtest_grid('ma_cross', array['x'], '{}')", &[]),
        "42501",
        "permission denied",
    );
    assert_eq!(count("select count(*) from quantops.backtest_results", &[]), before, "a refused call recorded something");
}

#[test]
fn the_grid_keeps_the_best_and_agrees_with_single_runs() {
    let s1 = format!("G1{}", &new_user()[..8]);
    let s2 = format!("G2{}", &new_user()[..8]);
    shared_bars(&s1, 4, 500);
    shared_bars(&s2, 5, 500);
    let a = Who::User(USER_A.into());
    let grid = r#"{"fast": {"from": 5, "to": 25, "step": 5}, "slow": [30, 40, 60]}"#;
    let opts = r#"{"fees": 0.001, "slippage": 0.0005}"#;
    // keep none: ranked rows, nothing recorded
    let none = request(
        &a,
        "select symbol, params, rank, run_id, recorded, sharpe from quantops.run_backtest_grid('ma_cross', array[$1, $2], $3::text::jsonb, $4::text::jsonb, keep => 'none', top_n => 4)",
        &[&s1, &s2, &grid, &opts],
    )
    .unwrap();
    assert_eq!(none.len(), 8, "4 a symbol");
    assert!(none.iter().all(|r| !r.get::<_, bool>(4)));
    for r in &none {
        let id: String = r.get(3);
        assert_eq!(count("select count(*) from quantops.backtest_results where run_id = $1", &[&id]), 0);
    }
    // best first within each symbol
    for sym in [&s1, &s2] {
        let sh: Vec<f64> =
            none.iter().filter(|r| r.get::<_, String>(0) == *sym).map(|r| r.get::<_, Option<f64>>(5).unwrap_or(f64::MIN)).collect();
        assert!(sh.windows(2).all(|w| w[0] >= w[1]), "{sh:?}");
    }
    // keep top: the same rows, recorded as the caller's
    let top = request(
        &a,
        "select symbol, params, rank, run_id, recorded, sharpe from quantops.run_backtest_grid('ma_cross', array[$1, $2], $3::text::jsonb, $4::text::jsonb, top_n => 4)",
        &[&s1, &s2, &grid, &opts],
    )
    .unwrap();
    assert_eq!(top.len(), 8);
    for (x, y) in none.iter().zip(&top) {
        assert_eq!(x.get::<_, String>(3), y.get::<_, String>(3));
        assert!(y.get::<_, bool>(4));
    }
    let owners = count(
        "select count(*) from quantops.backtest_results where run_id = any($1) and owner = $2::text::uuid",
        &[&top.iter().map(|r| r.get::<_, String>(3)).collect::<Vec<_>>(), &USER_A],
    );
    assert_eq!(owners, 8);
    // the best pair run alone is the same run: same id, same sharpe to the bit
    let best = &top[0];
    let params: serde_json::Value = best.get(1);
    let single = request(
        &a,
        "select run_id, sharpe from quantops.run_backtest('ma_cross', array[$1], $2::text::jsonb, $3::text::jsonb)",
        &[&best.get::<_, String>(0), &params.to_string(), &opts],
    )
    .unwrap();
    assert_eq!(single[0].get::<_, String>(0), best.get::<_, String>(3));
    assert_eq!(single[0].get::<_, Option<f64>>(1).map(f64::to_bits), best.get::<_, Option<f64>>(5).map(f64::to_bits));
    // keep all: every pair (5 fasts x 3 slows, all fast < slow)
    let all = request(
        &a,
        "select count(*) from quantops.run_backtest_grid('ma_cross', array[$1], $2::text::jsonb, keep => 'all')",
        &[&s1, &grid],
    )
    .unwrap();
    assert_eq!(all[0].get::<_, i64>(0), 15);
}

#[test]
fn a_cancelled_or_timed_out_grid_stops_and_records_nothing() {
    let s = format!("CX{}", &new_user()[..8]);
    shared_bars(&s, 6, 2520);
    let before = count("select count(*) from quantops.backtest_results", &[]);
    let mut c = connect("postgres");
    let t0 = std::time::Instant::now();
    let r = c.batch_execute(&format!(
        "set statement_timeout = '300ms'; select count(*) from quantops.run_backtest_grid('breakout', array['{s}'], \
         '{{\"window\": {{\"from\": 1, \"to\": 2000}}}}', keep => 'all')"
    ));
    let e = r.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57014"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "the timeout took {:?}", t0.elapsed());
    assert_eq!(count("select count(*) from quantops.backtest_results", &[]), before);
    // a cancel from another session (pg_cancel_backend) stops it the same way
    let pid: i32 = c.query_one("select pg_backend_pid()", &[]).unwrap().get(0);
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        admin().query_one("select pg_cancel_backend($1)", &[&pid]).unwrap().get::<_, bool>(0)
    });
    let t0 = std::time::Instant::now();
    let r = c.batch_execute(&format!(
        "reset statement_timeout; select count(*) from quantops.run_backtest_grid('breakout', array['{s}'], \
         '{{\"window\": {{\"from\": 1, \"to\": 2000}}}}', keep => 'all')"
    ));
    assert!(canceller.join().unwrap(), "the cancel reached the backend");
    let e = r.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57014"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "the cancel took {:?}", t0.elapsed());
    assert_eq!(count("select count(*) from quantops.backtest_results", &[]), before);
    // the backend still works, and its threads are free again
    c.batch_execute("reset statement_timeout").unwrap();
    let n: i64 = c
        .query_one(
            &format!(
                "select count(*) from quantops.run_backtest_grid('breakout', array['{s}'], '{{\"window\": [10, 20]}}', keep => 'none')"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[test]
fn target_weights_from_stored_signals_trade_point_in_time() {
    let s1 = format!("W1{}", &new_user()[..8]);
    let s2 = format!("W2{}", &new_user()[..8]);
    shared_bars(&s1, 7, 300);
    shared_bars(&s2, 8, 300);
    let a = Who::User(USER_A.into());
    let name = format!("tw-{}", &new_user()[..8]);
    // weights a user derives from its signals: each known the day after its ts
    request(
        &a,
        "insert into quantops.target_weights (strategy, symbol, ts, weight, available_at) \
         select $1, sym, timestamptz '2015-01-01' + g * interval '20 day', case when g % 2 = 0 then 0.5 else 0.1 end, \
                timestamptz '2015-01-02' + g * interval '20 day' \
         from generate_series(0, 12) g, unnest(array[$2, $3]) sym",
        &[&name, &s1, &s2],
    )
    .unwrap();
    let r = request(
        &a,
        "select trades, metrics from quantops.run_backtest('target_weights', array[$2, $3], jsonb_build_object('name', $1::text), '{\"fees\": 0.001}')",
        &[&name, &s1, &s2],
    )
    .unwrap();
    let metrics: serde_json::Value = r[0].get(1);
    assert!(metrics["orders"].as_i64().unwrap() >= 20, "{metrics}");
    assert_eq!(metrics["options"]["sizing"]["weight"], 0.5, "{metrics}");
    // another user does not see A's weights
    expect_err(
        request(
            &Who::User(USER_B.into()),
            "select quantops.run_backtest('target_weights', array[$2], jsonb_build_object('name', $1::text))",
            &[&name, &s1],
        ),
        "42704",
        "no target weights",
    );
    // weights that go short need long_short
    request(&a, "insert into quantops.target_weights (strategy, symbol, ts, weight) values ($1, $2, '2016-01-01', -0.3)", &[&name, &s1])
        .unwrap();
    expect_err(
        request(&a, "select quantops.run_backtest('target_weights', array[$2], jsonb_build_object('name', $1::text))", &[&name, &s1]),
        "22023",
        "long_short",
    );
}

#[test]
fn the_scheduled_runner_sweeps_shared_bars_and_records_them_shared() {
    let s = format!("SC{}", &new_user()[..8]);
    shared_bars(&s, 9, 300);
    // a user's private bar for the same symbol must not reach the shared run
    request(
        &Who::User(USER_A.into()),
        "insert into quantops.bars (symbol, ts, open, high, low, close) values ($1, '2015-02-01', 50, 500, 40, 400)",
        &[&s],
    )
    .unwrap();
    let name = format!("sched-{}", &new_user()[..8]).to_lowercase();
    let sv = Who::ServiceRole;
    request(
        &sv,
        "insert into quantops.backtest_schedules (name, strategy, symbols, grid, top_n) values ($1, 'ma_cross', array[$2], '{\"fast\": [5, 10], \"slow\": [20, 30]}', 2)",
        &[&name, &s],
    )
    .unwrap();
    // users may not schedule
    expect_err(
        request(
            &Who::User(USER_A.into()),
            "insert into quantops.backtest_schedules (name, strategy, symbols, grid) values ('x', 'ma_cross', array['y'], '{}')",
            &[],
        ),
        "42501",
        "permission denied",
    );
    let out = request(&sv, "select quantops.run_job('scheduled-backtest-runner')", &[]).unwrap();
    let out: serde_json::Value = out[0].get(0);
    assert_eq!(out["status"], "succeeded", "{out}");
    let recorded =
        count("select count(*) from quantops.backtest_results where strategy = $1 and owner is null", &[&format!("ma_cross:{s}")]);
    assert_eq!(recorded, 2);
    let (last_run, last_error): (Option<std::time::SystemTime>, Option<String>) = {
        let r = admin().query_one("select last_run_at, last_error from quantops.backtest_schedules where name = $1", &[&name]).unwrap();
        (r.get(0), r.get(1))
    };
    assert!(last_run.is_some() && last_error.is_none(), "{last_error:?}");
    // the private bar was not read: the fingerprint equals a shared-only run of the same bars by
    // a user without bars of its own
    let fp_sched: String = admin()
        .query_one(
            "select metrics->>'data_fingerprint' from quantops.backtest_results where strategy = $1 and owner is null limit 1",
            &[&format!("ma_cross:{s}")],
        )
        .unwrap()
        .get(0);
    let fp_b: serde_json::Value = request(
        &Who::User(USER_B.into()),
        "select metrics from quantops.run_backtest('ma_cross', array[$1], '{\"fast\": 5, \"slow\": 20}')",
        &[&s],
    )
    .unwrap()[0]
        .get(0);
    assert_eq!(fp_b["data_fingerprint"], fp_sched.as_str());
    // a schedule that fails records why, and the job goes on
    request(&sv, "update quantops.backtest_schedules set symbols = array['NO-SUCH-SYMBOL'] where name = $1", &[&name]).unwrap();
    let out: serde_json::Value = request(&sv, "select quantops.run_job('scheduled-backtest-runner')", &[]).unwrap()[0].get(0);
    assert_eq!(out["status"], "succeeded", "{out}");
    let err: String = admin().query_one("select last_error from quantops.backtest_schedules where name = $1", &[&name]).unwrap().get(0);
    assert!(err.contains("no bars of symbol"), "{err}");
    request(&sv, "delete from quantops.backtest_schedules where name = $1", &[&name]).unwrap();
}
