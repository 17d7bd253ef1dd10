//! The backtest engine alone (no PostgreSQL): a moving-average crossover grid over the bars that
//! bench/backtest_vbt.py wrote, on 1 thread and on every core. Writes each backtest's result
//! (for the equivalence check against vectorbt) and prints the timings as JSON.
//!
//! usage: cargo run --release --example backtest_bench -- BARS.bin LO HI STEP OUT.csv [REPEATS]
//! BARS.bin: u32 symbols, u32 bars, then per symbol open, high, low, close (f64 LE each).

use quantops::backtest::engine::{Bars, Config, Costs, Direction, Execution, Sizing, Strategy};
use quantops::backtest::grid::{self, Summary};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn read_bars(path: &str) -> Vec<Bars> {
    let b = std::fs::read(path).expect("the bars file");
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let (m, n) = (u32_at(0), u32_at(4));
    let mut off = 8;
    let mut col = || {
        let v: Vec<f64> = (0..n).map(|i| f64::from_le_bytes(b[off + 8 * i..off + 8 * i + 8].try_into().unwrap())).collect();
        off += 8 * n;
        v
    };
    (0..m)
        .map(|s| {
            let (open, high, low, close) = (col(), col(), col(), col());
            let ts: Vec<i64> = (0..n as i64).map(|i| i * 86_400_000_000).collect();
            Bars { symbol: format!("S{s}"), available_at: ts.clone(), ts, open, high, low, close }
        })
        .collect()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let bars = read_bars(&a[1]);
    let (lo, hi, step): (usize, usize, usize) = (a[2].parse().unwrap(), a[3].parse().unwrap(), a[4].parse().unwrap());
    let repeats: usize = a.get(6).map_or(3, |r| r.parse().unwrap());
    let w: Vec<usize> = (lo..=hi).step_by(step).collect();
    let mut pairs = vec![];
    for (i, f) in w.iter().enumerate() {
        for s in &w[i + 1..] {
            pairs.push(Strategy::MaCross { fast: *f, slow: *s });
        }
    }
    let cfg = Config {
        execution: Execution::NextOpen,
        direction: Direction::LongOnly,
        sizing: Sizing::AllIn,
        costs: Costs { fees: 0.001, fixed_fees: 0.0, slippage: 0.0005 },
        init_cash: 100.0,
    };
    let never = AtomicBool::new(false);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut timings = vec![];
    let mut first: Option<Vec<Vec<Summary>>> = None;
    let mut threads = vec![1];
    if cores > 1 {
        threads.push(cores);
    }
    for t in threads {
        let pool = quantops::threads::build(t, "bench").unwrap();
        let mut best = f64::MAX;
        for _ in 0..repeats {
            let t0 = Instant::now();
            let out: Vec<Vec<Summary>> =
                pool.install(|| bars.iter().map(|b| grid::sweep(b, &pairs, &cfg, 252, 0.0, &never).unwrap().unwrap()).collect());
            best = best.min(t0.elapsed().as_secs_f64());
            if first.is_none() {
                first = Some(out);
            }
        }
        let n = bars.len() * pairs.len();
        timings.push(format!(r#"{{"threads": {t}, "seconds": {best:.6}, "backtests": {n}, "per_second": {:.1}}}"#, n as f64 / best));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&a[5]).unwrap());
    writeln!(f, "symbol,fast,slow,orders,total_return,sharpe,sortino,cagr,max_drawdown,fees").unwrap();
    for (s, res) in first.unwrap().iter().enumerate() {
        for r in res {
            let Strategy::MaCross { fast, slow } = r.strategy else { unreachable!() };
            let m = &r.metrics;
            writeln!(
                f,
                "{s},{fast},{slow},{},{:e},{:e},{:e},{:e},{:e},{:e}",
                r.orders,
                m.total_return,
                m.sharpe.unwrap_or(f64::NAN),
                m.sortino.unwrap_or(f64::NAN),
                m.cagr,
                m.max_drawdown,
                r.fees_paid
            )
            .unwrap();
        }
    }
    println!(
        r#"{{"symbols": {}, "bars": {}, "pairs": {}, "cores": {cores}, "runs": [{}]}}"#,
        bars.len(),
        bars[0].len(),
        pairs.len(),
        timings.join(", ")
    );
}
