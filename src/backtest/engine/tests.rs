use super::*;

const DAY: i64 = 86_400_000_000;

/// Seeded geometric Brownian motion bars (daily, 20 % volatility), opens and highs/lows around
/// the closes, each available at its ts.
pub fn gbm(symbol: &str, seed: u64, n: usize) -> Bars {
    let normal = |i: u64| {
        // Box-Muller from two uniform draws of the seeded stream
        let u1 = ((crate::hash::splitmix64(seed, 2 * i) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = ((crate::hash::splitmix64(seed, 2 * i + 1) >> 11) as f64) / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let sigma = 0.2 / 252f64.sqrt();
    let mut b = Bars { symbol: symbol.into(), ts: vec![], available_at: vec![], open: vec![], high: vec![], low: vec![], close: vec![] };
    let mut c = 100.0;
    for i in 0..n {
        let o = c * (1.0 + 0.3 * sigma * normal(10_000 + i as u64));
        c *= (sigma * normal(i as u64) - sigma * sigma / 2.0).exp();
        let (hi, lo) = (o.max(c) * (1.0 + 0.002), o.min(c) * (1.0 - 0.002));
        b.ts.push(i as i64 * DAY);
        b.available_at.push(i as i64 * DAY);
        b.open.push(o);
        b.high.push(hi);
        b.low.push(lo);
        b.close.push(c);
    }
    b
}

/// The benchmark's settings: all-in long-only, next open, 0.1 % fees, 0.05 % slippage.
pub fn vectorbt_like() -> Config {
    Config {
        execution: Execution::NextOpen,
        direction: Direction::LongOnly,
        sizing: Sizing::AllIn,
        costs: Costs { fees: 0.001, fixed_fees: 0.0, slippage: 0.0005 },
        init_cash: 100.0,
    }
}

fn bars(open: &[f64], close: &[f64]) -> Bars {
    let n = open.len();
    Bars {
        symbol: "T".into(),
        ts: (0..n as i64).map(|i| i * DAY).collect(),
        available_at: (0..n as i64).map(|i| i * DAY).collect(),
        open: open.to_vec(),
        high: open.iter().zip(close).map(|(o, c)| o.max(*c)).collect(),
        low: open.iter().zip(close).map(|(o, c)| o.min(*c)).collect(),
        close: close.to_vec(),
    }
}

fn close_to(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn a_round_trip_costs_what_the_formulas_say() {
    // entry decided at bar 1, filled at open[2]; exit decided at bar 3, filled at open[4]
    let b = bars(&[10.0, 10.0, 11.0, 12.0, 13.0, 13.0], &[10.0, 10.5, 11.5, 12.5, 12.8, 13.0]);
    let cfg = Config { costs: Costs { fees: 0.01, fixed_fees: 0.5, slippage: 0.02 }, ..vectorbt_like() };
    let o = run_events(&b, &[0, 1, 0, -1, 0, 0], &known(&b), &cfg, true);
    let buy_price = 11.0 * 1.02;
    let units = (100.0 - 0.5) / 1.01 / buy_price;
    let buy_fee = units * buy_price * 0.01 + 0.5;
    assert!(close_to(units * buy_price + buy_fee, 100.0), "all-in spends all the cash");
    let sell_price = 13.0 * 0.98;
    let sell_fee = units * sell_price * 0.01 + 0.5;
    let end = units * sell_price - sell_fee;
    assert!(close_to(o.final_equity, end), "{} vs {end}", o.final_equity);
    // equity: flat, flat, marked at close[2] and close[3], then cash
    assert!(close_to(o.equity[0], 100.0) && close_to(o.equity[1], 100.0));
    assert!(close_to(o.equity[2], units * 11.5));
    assert!(close_to(o.equity[3], units * 12.5));
    assert!(close_to(o.equity[4], end) && close_to(o.equity[5], end));
    assert_eq!((o.orders, o.trades, o.closed_trades, o.winning_trades), (2, 1, 1, 1));
    assert!(close_to(o.fees_paid, buy_fee + sell_fee));
    assert!(close_to(o.exposure, 2.0 / 6.0));
    // returns chain to the equity
    let mut e = 100.0;
    for (r, q) in o.returns.iter().zip(&o.equity) {
        e *= 1.0 + r;
        assert!(close_to(e, *q));
    }
}

#[test]
fn executions_fill_where_they_say() {
    let b = bars(&[10.0, 20.0, 30.0, 40.0], &[15.0, 25.0, 35.0, 45.0]);
    let free = Config { costs: Costs { fees: 0.0, fixed_fees: 0.0, slippage: 0.0 }, ..vectorbt_like() };
    let ev = [1, 0, 0, 0];
    let at = |execution| run_events(&b, &ev, &known(&b), &Config { execution, ..free }, true).final_equity;
    // bought at open[1] = 20, close[1] = 25, close[0] = 15; held to close[3] = 45
    assert!(close_to(at(Execution::NextOpen), 100.0 / 20.0 * 45.0));
    assert!(close_to(at(Execution::NextClose), 100.0 / 25.0 * 45.0));
    assert!(close_to(at(Execution::SameClose), 100.0 / 15.0 * 45.0));
    // a decision on the last bar never fills
    assert_eq!(run_events(&b, &[0, 0, 0, 1], &known(&b), &free, false).orders, 0);
}

#[test]
fn late_data_delays_the_decision() {
    // bar 1's close (the entry) is delivered only at bar 3's time: the entry is decided at bar 3
    // and filled at open[4]
    let mut b = bars(&[10.0, 11.0, 12.0, 13.0, 14.0, 15.0], &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
    b.available_at[1] = 3 * DAY;
    let free = Config { costs: Costs { fees: 0.0, fixed_fees: 0.0, slippage: 0.0 }, ..vectorbt_like() };
    let o = run_events(&b, &[0, 1, 0, 0, 0, 0], &known(&b), &free, true);
    assert!(close_to(o.final_equity, 100.0 / 14.0 * 15.0), "{}", o.final_equity);
    assert!(close_to(o.equity[3], 100.0));
    // bar 2 was on time but comes after bar 1: nothing of it is usable before bar 1 is
    assert_eq!(known(&b), vec![1, 1, 1, 4, 5, 6]);
}

#[test]
fn randomising_the_future_never_changes_the_past() {
    // prefix invariance: the look-ahead test, for every strategy, execution and direction
    let base = gbm("P", 11, 600);
    let k = 377;
    let mut other = base.clone();
    let fresh = gbm("P", 12, 600);
    for i in k + 1..600 {
        let f = base.close[k] / fresh.close[k];
        other.open[i] = fresh.open[i] * f;
        other.high[i] = fresh.high[i] * f;
        other.low[i] = fresh.low[i] * f;
        other.close[i] = fresh.close[i] * f;
    }
    for strategy in [Strategy::MaCross { fast: 3, slow: 12 }, Strategy::Breakout { window: 10 }] {
        for execution in [Execution::NextOpen, Execution::NextClose, Execution::SameClose] {
            for direction in [Direction::LongOnly, Direction::LongShort] {
                let cfg = Config { execution, direction, ..vectorbt_like() };
                let a = run(strategy, std::slice::from_ref(&base), &[], &cfg, true).unwrap();
                let b = run(strategy, std::slice::from_ref(&other), &[], &cfg, true).unwrap();
                assert!(a.orders > 4, "{strategy} trades");
                for i in 0..=k {
                    assert_eq!(a.equity[i].to_bits(), b.equity[i].to_bits(), "{strategy} {execution:?} {direction:?} at {i}");
                }
                assert_ne!(a.final_equity, b.final_equity);
            }
        }
    }
}

#[test]
fn crossings_match_vectorbts_events() {
    let a = [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 2.0, 3.0, f64::NAN, 3.0, 1.0, 3.0];
    let b = [2.0; 12];
    let mut ev = vec![];
    crossings(&a, &b, &mut ev);
    // below, equal, above: a cross; equal then above again after touching: a cross again
    // (vectorbt's behaviour); a NaN forgets the side, so the first cross after it needs a side
    assert_eq!(ev, vec![0, 0, 1, 0, -1, 0, 0, 1, 0, 0, -1, 1]);
}

#[test]
fn moving_averages_are_prefix_sum_differences() {
    let c = Closes::new(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    let mut m = vec![];
    c.ma(2, &mut m);
    assert!(m[0].is_nan());
    assert_eq!(&m[1..], &[1.5, 2.5, 3.5, 4.5]);
}

#[test]
fn target_weights_share_the_cash() {
    let a = bars(&[10.0, 10.0, 10.0, 12.0], &[10.0, 10.0, 10.0, 12.0]);
    let mut b = bars(&[20.0, 20.0, 20.0, 10.0], &[20.0, 20.0, 20.0, 10.0]);
    b.symbol = "U".into();
    let free = Config { sizing: Sizing::Weight(1.0), costs: Costs { fees: 0.0, fixed_fees: 0.0, slippage: 0.0 }, ..vectorbt_like() };
    let w = vec![vec![TargetWeight { available_at: DAY, weight: 0.5 }], vec![TargetWeight { available_at: DAY, weight: 0.25 }]];
    let o = run(Strategy::Weights, &[a, b], &w, &free, true).unwrap();
    // decided at bar 1, filled at open[2]: 5 units of a (50), 1.25 of b (25), 25 in cash
    assert!(close_to(o.final_equity, 25.0 + 5.0 * 12.0 + 1.25 * 10.0), "{}", o.final_equity);
    assert_eq!(o.orders, 2);
    // a weight not yet available is not used
    let late = vec![vec![TargetWeight { available_at: 3 * DAY, weight: 1.0 }], vec![]];
    let o = run(Strategy::Weights, &[bars(&[1.0; 4], &[1.0; 4]), bars(&[1.0; 4], &[1.0; 4])], &late, &free, false).unwrap();
    assert_eq!(o.orders, 0);
}

#[test]
fn a_short_that_loses_everything_stops_the_run() {
    let b = bars(&[10.0, 10.0, 10.0, 40.0, 50.0], &[10.0, 10.0, 10.0, 40.0, 60.0]);
    let cfg = Config { direction: Direction::LongShort, costs: Costs { fees: 0.0, fixed_fees: 0.0, slippage: 0.0 }, ..vectorbt_like() };
    let o = run_events(&b, &[0, -1, 0, 0, 0], &known(&b), &cfg, true);
    // short 10 units at 10 (cash 200); at close 40 the equity is 200 - 400 < 0: bust
    assert!(o.bust);
    assert_eq!(o.equity[3], 0.0);
    assert_eq!(o.returns[3], -1.0);
    assert_eq!(o.returns[4], 0.0);
    let m = crate::backtest::core::of_checked(&o.returns, 252, 0.0);
    assert_eq!(m.max_drawdown, 1.0);
}

#[test]
fn long_short_reverses_on_each_signal() {
    let b = bars(&[10.0, 10.0, 10.0, 8.0, 8.0, 9.0], &[10.0, 10.0, 10.0, 8.0, 8.0, 9.0]);
    let cfg = Config { direction: Direction::LongShort, costs: Costs { fees: 0.0, fixed_fees: 0.0, slippage: 0.0 }, ..vectorbt_like() };
    let o = run_events(&b, &[1, -1, 0, 0, 1, 0], &known(&b), &cfg, true);
    // long 10 at open[1] = 10; at open[2] = 10 sell 10 and short 10 (cash 200); at open[5] = 9
    // buy back 10 (cash 110) and go long 110 / 9; a reversal is two orders (close, open)
    assert_eq!(o.orders, 5);
    assert!(close_to(o.final_equity, 110.0), "{}", o.final_equity);
    assert_eq!((o.trades, o.closed_trades, o.winning_trades), (3, 2, 1));
}

#[test]
fn bad_settings_and_bars_are_refused() {
    let b = gbm("B", 1, 50);
    let run1 = |cfg: &Config, s| run(s, std::slice::from_ref(&b), &[], cfg, false);
    let ma = Strategy::MaCross { fast: 5, slow: 20 };
    for (cfg, want) in [
        (Config { init_cash: 0.0, ..vectorbt_like() }, "init_cash"),
        (Config { costs: Costs { fees: f64::NAN, fixed_fees: 0.0, slippage: 0.0 }, ..vectorbt_like() }, "fees"),
        (Config { costs: Costs { fees: 0.0, fixed_fees: -1.0, slippage: 0.0 }, ..vectorbt_like() }, "fixed_fees"),
        (Config { costs: Costs { fees: 0.0, fixed_fees: 0.0, slippage: 0.7 }, ..vectorbt_like() }, "slippage"),
        (Config { sizing: Sizing::Weight(1.5), ..vectorbt_like() }, "weight"),
        (Config { sizing: Sizing::Notional(-3.0), ..vectorbt_like() }, "notional"),
    ] {
        let e = run1(&cfg, ma).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    assert!(run1(&vectorbt_like(), Strategy::MaCross { fast: 20, slow: 5 }).unwrap_err().to_string().contains("fast < slow"));
    assert!(run(ma, &[b.clone(), b.clone()], &[], &vectorbt_like(), false).unwrap_err().to_string().contains("all_in takes one symbol"));
    let mut bad = b.clone();
    bad.close[7] = f64::NAN;
    assert!(run(ma, &[bad], &[], &vectorbt_like(), false).unwrap_err().to_string().contains("bar 8"));
    let mut bad = b.clone();
    bad.high[3] = bad.low[3] * 0.9;
    assert!(run(ma, &[bad], &[], &vectorbt_like(), false).unwrap_err().to_string().contains("[low, high]"));
    let mut bad = b.clone();
    bad.ts[4] = bad.ts[3];
    assert!(run(ma, &[bad], &[], &vectorbt_like(), false).unwrap_err().to_string().contains("increase"));
}

#[test]
fn notional_sizing_takes_that_much_cash_at_most() {
    let b = bars(&[10.0, 10.0, 10.0, 20.0], &[10.0, 10.0, 10.0, 20.0]);
    let c = Costs { fees: 0.01, fixed_fees: 0.0, slippage: 0.0 };
    let cfg = Config { sizing: Sizing::Notional(30.0), costs: c, ..vectorbt_like() };
    let o = run_events(&b, &[0, 1, 0, 0], &known(&b), &cfg, true);
    // 30 of cash, fees included, at open[2] = 10: 30 / 10 / 1.01 units; the rest stays cash
    let units = 30.0 / 10.0 / 1.01;
    assert!(close_to(o.equity[2], 70.0 + units * 10.0), "{}", o.equity[2]);
    assert!(close_to(o.final_equity, 70.0 + units * 20.0));
    // more than the cash there is: all of it, no more
    let cfg = Config { sizing: Sizing::Notional(1e6), costs: c, ..vectorbt_like() };
    let o = run_events(&b, &[0, 1, 0, 0], &known(&b), &cfg, true);
    assert!(close_to(o.final_equity, 100.0 / 1.01 / 10.0 * 20.0), "{}", o.final_equity);
}
