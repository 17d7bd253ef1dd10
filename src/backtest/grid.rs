//! Parameter sweeps: every parameter set of a strategy over one symbol's bars, in parallel on
//! the caller's rayon pool. Pure: the threads never call PostgreSQL; `cancel` stops them between
//! backtests. Only each backtest's summary is kept (never an equity curve), so a sweep of any
//! size holds one symbol's bars, its moving averages and one summary a parameter set.

use super::core::{self as metrics, Metrics};
use super::engine::{self, Bars, Config, EngineError, Outcome, Strategy};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// One backtest's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub strategy: Strategy,
    pub metrics: Metrics,
    pub orders: u32,
    pub trades: u32,
    pub closed_trades: u32,
    pub winning_trades: u32,
    pub fees_paid: f64,
    pub traded_value: f64,
    pub exposure: f64,
    pub final_equity: f64,
    pub bust: bool,
}

impl Summary {
    pub fn of(strategy: Strategy, o: &Outcome, periods_per_year: i32, risk_free: f64) -> Summary {
        Summary {
            strategy,
            metrics: metrics::of_checked(&o.returns, periods_per_year, risk_free),
            orders: o.orders,
            trades: o.trades,
            closed_trades: o.closed_trades,
            winning_trades: o.winning_trades,
            fees_paid: o.fees_paid,
            traded_value: o.traded_value,
            exposure: o.exposure,
            final_equity: o.final_equity,
            bust: o.bust,
        }
    }

    /// Closed trades that made money after costs, over closed trades (None with none closed).
    pub fn win_rate(&self) -> Option<f64> {
        (self.closed_trades > 0).then(|| self.winning_trades as f64 / self.closed_trades as f64)
    }
}

/// Runs every strategy of `strategies` over `bars` with `cfg`. `None` when `cancel` was set
/// before it finished.
pub fn sweep(
    bars: &Bars,
    strategies: &[Strategy],
    cfg: &Config,
    periods_per_year: i32,
    risk_free: f64,
    cancel: &AtomicBool,
) -> Result<Option<Vec<Summary>>, EngineError> {
    bars.check()?;
    if bars.is_empty() {
        return Err(EngineError::Bars(format!("there are no bars of {:?} to run on", bars.symbol)));
    }
    for s in strategies {
        cfg.check(1, *s)?;
    }
    let known = engine::known(bars);
    let closes = engine::Closes::new(&bars.close);
    // every moving average the sweep needs, once
    let mut windows: Vec<usize> = strategies
        .iter()
        .flat_map(|s| match s {
            Strategy::MaCross { fast, slow } => vec![*fast, *slow],
            _ => vec![],
        })
        .collect();
    windows.sort_unstable();
    windows.dedup();
    let mas: HashMap<usize, Vec<f64>> = windows
        .par_iter()
        .map(|w| {
            let mut v = Vec::new();
            closes.ma(*w, &mut v);
            (*w, v)
        })
        .collect();
    let out: Vec<Option<Summary>> = strategies
        .par_iter()
        .map_init(Vec::new, |ev, s| {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            match s {
                Strategy::MaCross { fast, slow } => engine::crossings(&mas[fast], &mas[slow], ev),
                Strategy::Breakout { window } => engine::breakouts(bars, *window, ev),
                Strategy::Weights => {
                    ev.clear();
                    ev.resize(bars.len(), 0)
                }
            }
            let o = engine::run_events(bars, ev, &known, cfg, false);
            Some(Summary::of(*s, &o, periods_per_year, risk_free))
        })
        .collect();
    if cancel.load(Ordering::Relaxed) || out.iter().any(|s| s.is_none()) {
        return Ok(None);
    }
    Ok(Some(out.into_iter().flatten().collect()))
}

/// What a sweep ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    Sharpe,
    Sortino,
    Cagr,
    TotalReturn,
    MaxDrawdown,
}

impl RankBy {
    pub fn parse(s: &str) -> Option<RankBy> {
        Some(match s {
            "sharpe" => RankBy::Sharpe,
            "sortino" => RankBy::Sortino,
            "cagr" => RankBy::Cagr,
            "total_return" => RankBy::TotalReturn,
            "max_drawdown" => RankBy::MaxDrawdown,
            _ => return None,
        })
    }

    /// The score, higher is better; None (no sharpe, no sortino) ranks last.
    fn score(self, m: &Metrics) -> Option<f64> {
        match self {
            RankBy::Sharpe => m.sharpe,
            RankBy::Sortino => m.sortino,
            RankBy::Cagr => Some(m.cagr),
            RankBy::TotalReturn => Some(m.total_return),
            RankBy::MaxDrawdown => Some(-m.max_drawdown),
        }
    }
}

/// Sorts best first by `by` (ties: the parameters, in order, so the order never depends on
/// threads) and keeps `n`.
pub fn top(mut all: Vec<Summary>, by: RankBy, n: usize) -> Vec<Summary> {
    all.sort_by(|a, b| {
        let (x, y) = (by.score(&a.metrics), by.score(&b.metrics));
        match (x, y) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(a.strategy.cmp(&b.strategy))
    });
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::engine::tests::{gbm, vectorbt_like};

    fn pairs(lo: usize, hi: usize, step: usize) -> Vec<Strategy> {
        let w: Vec<usize> = (lo..=hi).step_by(step).collect();
        let mut out = vec![];
        for (i, f) in w.iter().enumerate() {
            for s in &w[i + 1..] {
                out.push(Strategy::MaCross { fast: *f, slow: *s });
            }
        }
        out
    }

    #[test]
    fn the_grid_has_the_issues_sizes() {
        assert_eq!(pairs(5, 100, 5).len(), 190);
        assert_eq!(pairs(2, 100, 1).len(), 4851);
    }

    #[test]
    fn one_thread_or_many_give_bit_identical_results() {
        let bars = gbm("X", 7, 1000);
        let grid = pairs(2, 60, 2);
        let cfg = vectorbt_like();
        let never = AtomicBool::new(false);
        let one = crate::threads::build(1, "t1").unwrap().install(|| sweep(&bars, &grid, &cfg, 252, 0.0, &never)).unwrap().unwrap();
        let four = crate::threads::build(4, "t4").unwrap().install(|| sweep(&bars, &grid, &cfg, 252, 0.0, &never)).unwrap().unwrap();
        assert_eq!(one.len(), grid.len());
        for (a, b) in one.iter().zip(&four) {
            assert_eq!(a.strategy, b.strategy);
            assert_eq!(a.metrics.total_return.to_bits(), b.metrics.total_return.to_bits());
            assert_eq!(a.metrics.sharpe.map(f64::to_bits), b.metrics.sharpe.map(f64::to_bits));
            assert_eq!(a.fees_paid.to_bits(), b.fees_paid.to_bits());
        }
        // and the sweep's shared moving averages give what a run on its own gives
        for s in [grid[0], grid[17], grid[grid.len() - 1]] {
            let alone = engine::run(s, std::slice::from_ref(&bars), &[], &cfg, false).unwrap();
            let got = one.iter().find(|x| x.strategy == s).unwrap();
            assert_eq!(got.final_equity.to_bits(), alone.final_equity.to_bits());
            assert_eq!(got.orders, alone.orders);
        }
        // some pairs trade, and not all alike
        assert!(one.iter().any(|s| s.orders > 4));
        assert!(one.iter().map(|s| s.final_equity.to_bits()).collect::<std::collections::HashSet<_>>().len() > grid.len() / 2);
    }

    #[test]
    fn a_cancelled_sweep_stops() {
        let bars = gbm("X", 8, 500);
        let grid = pairs(2, 40, 1);
        let cancel = AtomicBool::new(true);
        assert_eq!(sweep(&bars, &grid, &vectorbt_like(), 252, 0.0, &cancel).unwrap(), None);
    }

    #[test]
    fn top_ranks_best_first_and_breaks_ties_by_parameters() {
        let bars = gbm("X", 9, 800);
        let grid = pairs(5, 50, 5);
        let never = AtomicBool::new(false);
        let all = sweep(&bars, &grid, &vectorbt_like(), 252, 0.0, &never).unwrap().unwrap();
        let best = top(all.clone(), RankBy::Sharpe, 10);
        assert_eq!(best.len(), 10);
        let max = all.iter().filter_map(|s| s.metrics.sharpe).fold(f64::MIN, f64::max);
        assert_eq!(best[0].metrics.sharpe, Some(max));
        assert!(best.windows(2).all(|w| w[0].metrics.sharpe.unwrap_or(f64::MIN) >= w[1].metrics.sharpe.unwrap_or(f64::MIN)));
        let dd = top(all, RankBy::MaxDrawdown, 3);
        assert!(dd[0].metrics.max_drawdown <= dd[1].metrics.max_drawdown);
    }
}
