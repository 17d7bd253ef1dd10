//! The backtest engine: pure Rust (no PostgreSQL), deterministic, point-in-time.
//!
//! The semantics (docs/backtest.md states them for users; the tests pin them):
//!
//! - **Bars.** Each symbol's bars are in `ts` order. `ts` is the time the bar's close is known
//!   at the earliest (a daily bar's date); `available_at >= ts` is when quantops may use it (a
//!   vendor's late delivery, a restatement).
//! - **Decisions.** At each bar `t` of a symbol the strategy decides from the bars it may use at
//!   `ts[t]`: the longest prefix of the symbol's bars whose `available_at` are all `<= ts[t]`.
//!   Signals that became known together (a late delivery) act as one: the newest counts.
//! - **Fills.** A decision at bar `t` fills at `open[t + 1]` (`next_open`, the default), at
//!   `close[t + 1]` (`next_close`), or at `close[t]` (`same_close`, only when asked for and then
//!   recorded with the result). A decision on a symbol's last bar never fills.
//! - **Orders** (the formulas of vectorbt's `from_signals`): a buy at price `p` pays
//!   `p * (1 + slippage)` a unit plus fees `value * fees + fixed_fees`; a sell gets
//!   `p * (1 - slippage)` a unit less the same fees. All-in buys spend
//!   `(cash - fixed_fees) / (1 + fees)`. At one moment, sells fill before buys.
//! - **Equity** after each step of the timeline (every `ts` of any symbol) is cash plus each
//!   position at its symbol's last close; the step's return is its equity over the previous
//!   step's (the first over the initial cash) minus 1. Equity that reaches 0 stops the run (a
//!   bust): nothing trades after it, every later return is 0.

use std::fmt;

/// One symbol's bars, oldest first. Times are PostgreSQL's microseconds since 2000-01-01.
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    pub symbol: String,
    pub ts: Vec<i64>,
    pub available_at: Vec<i64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
}

impl Bars {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Refuses what the tables refuse too (a caller of the pure engine may not have come
    /// through them): times out of order, a value not finite, prices not positive, a close or
    /// an open outside [low, high], data available before its bar.
    pub fn check(&self) -> Result<(), EngineError> {
        let n = self.ts.len();
        let s = &self.symbol;
        if [self.available_at.len(), self.open.len(), self.high.len(), self.low.len(), self.close.len()].iter().any(|l| *l != n) {
            return Err(EngineError::Bars(format!("the bars of {s:?} have columns of different lengths")));
        }
        for i in 0..n {
            let (o, h, l, c) = (self.open[i], self.high[i], self.low[i], self.close[i]);
            if ![o, h, l, c].iter().all(|x| x.is_finite() && *x > 0.0) {
                return Err(EngineError::Bars(format!("bar {} of {s:?}: prices must be finite and positive", i + 1)));
            }
            if h < l || c < l || c > h || o < l || o > h {
                return Err(EngineError::Bars(format!("bar {} of {s:?}: open and close must lie in [low, high]", i + 1)));
            }
            if i > 0 && self.ts[i] <= self.ts[i - 1] {
                return Err(EngineError::Bars(format!("bar {} of {s:?}: times must increase", i + 1)));
            }
            if self.available_at[i] < self.ts[i] {
                return Err(EngineError::Bars(format!("bar {} of {s:?}: available_at is before the bar", i + 1)));
            }
        }
        Ok(())
    }

    /// For each bar t, how many bars (a prefix) may be used at ts[t].
    fn known(&self) -> Vec<usize> {
        let n = self.len();
        let mut out = Vec::with_capacity(n);
        let mut k = 0;
        for t in 0..n {
            while k < n && self.available_at[k] <= self.ts[t] {
                k += 1;
            }
            // available_at is per bar, the usable set is a prefix: stop at the first one not yet
            // available even if a later one is
            out.push(k);
        }
        out
    }
}

/// When a decision fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    NextOpen,
    NextClose,
    SameClose,
}

impl Execution {
    pub fn name(self) -> &'static str {
        match self {
            Execution::NextOpen => "next_open",
            Execution::NextClose => "next_close",
            Execution::SameClose => "same_close",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    LongOnly,
    LongShort,
}

/// How large a position a signal opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizing {
    /// All the cash (a single symbol).
    AllIn,
    /// This much cash a position, at most what is there.
    Notional(f64),
    /// This fraction of equity a position (shared cash across symbols).
    Weight(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    /// A fraction of each order's value.
    pub fees: f64,
    /// Cash per order.
    pub fixed_fees: f64,
    /// A fraction of the price, against the order.
    pub slippage: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub execution: Execution,
    pub direction: Direction,
    pub sizing: Sizing,
    pub costs: Costs,
    pub init_cash: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// Long when the fast moving average of closes crosses above the slow one, out (or short)
    /// when it crosses below.
    MaCross { fast: usize, slow: usize },
    /// Long when the close rises above the highest high of the `window` bars before, out (or
    /// short) when it falls below their lowest low.
    Breakout { window: usize },
    /// Rebalance each symbol to the stored target weights.
    Weights,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Bars(String),
    #[error("{0}")]
    Config(String),
}

/// A stored target weight: from `available_at` on, hold `weight` of equity in the symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetWeight {
    pub available_at: i64,
    pub weight: f64,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// One return a step of the timeline.
    pub returns: Vec<f64>,
    /// Equity after each step (kept only when asked for).
    pub equity: Vec<f64>,
    pub final_equity: f64,
    pub orders: u32,
    /// Positions opened.
    pub trades: u32,
    /// Positions closed, and those of them that made money after costs.
    pub closed_trades: u32,
    pub winning_trades: u32,
    pub fees_paid: f64,
    /// Value of every order, summed.
    pub traded_value: f64,
    /// The fraction of steps that ended holding a position.
    pub exposure: f64,
    pub bust: bool,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::MaCross { fast, slow } => write!(f, "ma_cross({fast}, {slow})"),
            Strategy::Breakout { window } => write!(f, "breakout({window})"),
            Strategy::Weights => write!(f, "target_weights"),
        }
    }
}

impl Config {
    pub fn check(&self, symbols: usize, strategy: Strategy) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::Config(m.to_string()));
        let c = &self.costs;
        if !(self.init_cash.is_finite() && self.init_cash > 0.0) {
            return bad("init_cash must be a positive number");
        }
        if !(c.fees.is_finite() && (0.0..0.5).contains(&c.fees)) {
            return bad("fees must be at least 0 and below 0.5");
        }
        if !(c.slippage.is_finite() && (0.0..0.5).contains(&c.slippage)) {
            return bad("slippage must be at least 0 and below 0.5");
        }
        if !(c.fixed_fees.is_finite() && c.fixed_fees >= 0.0) {
            return bad("fixed_fees must be at least 0");
        }
        match self.sizing {
            Sizing::AllIn if symbols > 1 => {
                return bad("sizing all_in takes one symbol; give weight or notional to share cash across symbols")
            }
            Sizing::AllIn if strategy == Strategy::Weights => return bad("target_weights sizes its own positions; leave sizing out"),
            Sizing::Notional(x) if !(x.is_finite() && x > 0.0) => return bad("notional must be a positive number"),
            Sizing::Weight(w) if !(w.is_finite() && w > 0.0 && w <= 1.0) => return bad("weight must be above 0 and at most 1"),
            _ => {}
        }
        match strategy {
            Strategy::MaCross { fast, slow } if fast < 1 || slow <= fast || slow > 10_000 => {
                bad("ma_cross needs 1 <= fast < slow <= 10000")
            }
            Strategy::Breakout { window } if !(1..=10_000).contains(&window) => bad("breakout needs 1 <= window <= 10000"),
            _ => Ok(()),
        }
    }
}

/// Prefix sums of closes, for moving averages of any window in O(n) each, computed the way
/// vectorbt's rolling mean is (so both engines see bit-identical averages).
pub struct Closes {
    cumsum: Vec<f64>,
}

impl Closes {
    pub fn new(close: &[f64]) -> Closes {
        let mut s = 0.0;
        Closes {
            cumsum: close
                .iter()
                .map(|c| {
                    s += c;
                    s
                })
                .collect(),
        }
    }

    /// The simple moving average of `w` closes at each bar (NaN before the first full window).
    pub fn ma(&self, w: usize, out: &mut Vec<f64>) {
        let n = self.cumsum.len();
        out.clear();
        out.reserve(n);
        let wf = w as f64;
        for i in 0..n {
            out.push(if i + 1 < w {
                f64::NAN
            } else if i + 1 == w {
                self.cumsum[i] / wf
            } else {
                (self.cumsum[i] - self.cumsum[i - w]) / wf
            });
        }
    }
}

/// +1 where `a` crosses above `b`, -1 where it crosses below, else 0. A cross above at i: a > b
/// at i, not a > b at i - 1, and a < b somewhere since the last NaN (the same events as
/// vectorbt's `crossed_above` / `crossed_below`).
pub fn crossings(a: &[f64], b: &[f64], out: &mut Vec<i8>) {
    out.clear();
    out.reserve(a.len());
    let (mut seen_below, mut seen_above) = (false, false);
    let (mut prev_above, mut prev_below) = (false, false);
    for i in 0..a.len() {
        let (x, y) = (a[i], b[i]);
        if x.is_nan() || y.is_nan() {
            seen_below = false;
            seen_above = false;
            prev_above = false;
            prev_below = false;
            out.push(0);
            continue;
        }
        let (above, below) = (x > y, x < y);
        let ev = if above && !prev_above && seen_below {
            1
        } else if below && !prev_below && seen_above {
            -1
        } else {
            0
        };
        seen_below |= below;
        seen_above |= above;
        prev_above = above;
        prev_below = below;
        out.push(ev);
    }
}

/// Donchian breakout events: +1 where the close is above the highest high of the `w` bars
/// before, -1 where it is below their lowest low.
pub fn breakouts(bars: &Bars, w: usize, out: &mut Vec<i8>) {
    let n = bars.len();
    out.clear();
    out.resize(n, 0);
    for (i, o) in out.iter_mut().enumerate().skip(w) {
        let hi = bars.high[i - w..i].iter().fold(f64::MIN, |m, x| m.max(*x));
        let lo = bars.low[i - w..i].iter().fold(f64::MAX, |m, x| m.min(*x));
        let c = bars.close[i];
        *o = if c > hi {
            1
        } else if c < lo {
            -1
        } else {
            0
        };
    }
}

/// The events of a signal strategy on one symbol's bars.
pub fn events(strategy: Strategy, bars: &Bars, closes: &Closes) -> Vec<i8> {
    let mut ev = Vec::new();
    match strategy {
        Strategy::MaCross { fast, slow } => {
            let (mut f, mut s) = (Vec::new(), Vec::new());
            closes.ma(fast, &mut f);
            closes.ma(slow, &mut s);
            crossings(&f, &s, &mut ev);
        }
        Strategy::Breakout { window } => breakouts(bars, window, &mut ev),
        Strategy::Weights => ev.resize(bars.len(), 0),
    }
    ev
}

/// What a symbol should hold after a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Long,
    Short,
    Flat,
    Weight(f64),
}

/// The decision at each bar from raw events and what was known when (point in time): at bar t
/// the events of bars known[t-1]..known[t] arrive; the newest non-zero one counts.
fn decisions(ev: &[i8], known: &[usize], direction: Direction) -> Vec<Option<Target>> {
    let mut out = Vec::with_capacity(ev.len());
    let mut seen = 0;
    for &k in known {
        let newest = ev[seen..k].iter().rev().find(|e| **e != 0).copied();
        seen = seen.max(k);
        out.push(newest.map(|e| match (e > 0, direction) {
            (true, _) => Target::Long,
            (false, Direction::LongOnly) => Target::Flat,
            (false, Direction::LongShort) => Target::Short,
        }));
    }
    out
}

/// The decision at each bar from stored target weights (sorted by available_at): the newest
/// weight that became available since the previous bar.
fn weight_decisions(bars: &Bars, weights: &[TargetWeight]) -> Vec<Option<Target>> {
    let mut out = Vec::with_capacity(bars.len());
    let mut j = 0;
    for t in 0..bars.len() {
        let mut newest = None;
        while j < weights.len() && weights[j].available_at <= bars.ts[t] {
            newest = Some(Target::Weight(weights[j].weight));
            j += 1;
        }
        out.push(newest);
    }
    out
}

/// The portfolio while it runs.
struct Book<'a> {
    cfg: &'a Config,
    cash: f64,
    pos: Vec<f64>,
    mark: Vec<f64>,
    flow: Vec<f64>,
    out: Outcome,
}

impl Book<'_> {
    fn equity_at(&self, s: usize, price: f64) -> f64 {
        let mut e = self.cash;
        for (j, (p, m)) in self.pos.iter().zip(&self.mark).enumerate() {
            if *p != 0.0 {
                e += p * if j == s { price } else { *m };
            }
        }
        e
    }

    /// Trades `q` units of symbol `s` at `price` (q > 0 buys, q < 0 sells), never across zero in
    /// one call.
    fn fill(&mut self, s: usize, q: f64, price: f64) {
        if q == 0.0 || !q.is_finite() {
            return;
        }
        let c = self.cfg.costs;
        let was = self.pos[s];
        let value;
        let fee;
        if q > 0.0 {
            value = q * price * (1.0 + c.slippage);
            fee = value * c.fees + c.fixed_fees;
            self.cash -= value + fee;
            self.flow[s] -= value + fee;
        } else {
            value = -q * price * (1.0 - c.slippage);
            fee = value * c.fees + c.fixed_fees;
            self.cash += value - fee;
            self.flow[s] += value - fee;
        }
        let now = was + q;
        // a position closed to within rounding is closed
        let now = if now.abs() <= 1e-12 * was.abs().max(q.abs()) { 0.0 } else { now };
        self.pos[s] = now;
        self.out.orders += 1;
        self.out.fees_paid += fee;
        self.out.traded_value += value;
        if was == 0.0 && now != 0.0 {
            // the trade's cash flows start with this order's (flow was 0 since the last close)
            self.out.trades += 1;
        } else if was != 0.0 && now == 0.0 {
            self.out.closed_trades += 1;
            if self.flow[s] > 0.0 {
                self.out.winning_trades += 1;
            }
            self.flow[s] = 0.0;
        }
    }

    /// Units an all-cash buy gets at `price`.
    fn affordable(&self, price: f64) -> f64 {
        let c = self.cfg.costs;
        ((self.cash - c.fixed_fees) / (1.0 + c.fees) / (price * (1.0 + c.slippage))).max(0.0)
    }

    /// Moves symbol `s` toward `target` at `price`. `sells`: this pass does only the orders that
    /// sell (they fill first); else only those that buy.
    fn apply(&mut self, s: usize, target: Target, price: f64, sells: bool) {
        let cfg = *self.cfg;
        let pos = self.pos[s];
        // the position wanted, or None for "keep it" (a signal that repeats the current side)
        let want: Option<f64> = match (target, cfg.sizing) {
            (Target::Flat, _) => Some(0.0),
            (Target::Long, _) if pos > 0.0 => None,
            (Target::Short, _) if pos < 0.0 => None,
            (Target::Long | Target::Short, Sizing::Weight(w)) | (Target::Weight(w), _) => {
                let w = match target {
                    Target::Short => -w,
                    _ => w,
                };
                Some(w * self.equity_at(s, price) / price)
            }
            (Target::Long, _) => Some(f64::INFINITY),
            (Target::Short, _) => Some(f64::NEG_INFINITY),
        };
        let Some(want) = want else { return };
        // first close a position on the other side (a sell or a buy back)
        if pos > 0.0 && want < pos && sells {
            let q = if want >= 0.0 { want - pos } else { -pos };
            self.fill(s, q, price);
        }
        if pos < 0.0 && want > pos && !sells {
            let q = if want <= 0.0 { want - pos } else { -pos };
            self.fill(s, q, price);
        }
        let pos = self.pos[s];
        if sells && want < 0.0 && want < pos && pos <= 0.0 {
            // open or grow a short
            let q = match cfg.sizing {
                _ if want.is_finite() => want - pos,
                Sizing::Notional(x) => -(x.min(self.cash.max(0.0))) / (price * (1.0 - cfg.costs.slippage)),
                _ => -((self.cash - cfg.costs.fixed_fees) / (1.0 + cfg.costs.fees) / (price * (1.0 - cfg.costs.slippage))).max(0.0),
            };
            self.fill(s, q, price);
        }
        if !sells && want > 0.0 && want > pos && pos >= 0.0 {
            // open or grow a long, never with cash that is not there
            let q = match cfg.sizing {
                _ if want.is_finite() => want - pos,
                Sizing::Notional(x) => x / (price * (1.0 + cfg.costs.slippage) * (1.0 + cfg.costs.fees)),
                _ => f64::INFINITY,
            };
            let q = q.min(self.affordable(price));
            if q > 0.0 {
                self.fill(s, q, price);
            }
        }
    }
}

/// Runs `strategy` over the symbols' bars (checked, each in ts order) with `cfg`. `weights[s]`:
/// the stored target weights of symbol s, for [`Strategy::Weights`] (sorted by available_at).
/// `keep_equity`: also return the equity curve.
pub fn run(
    strategy: Strategy,
    bars: &[Bars],
    weights: &[Vec<TargetWeight>],
    cfg: &Config,
    keep_equity: bool,
) -> Result<Outcome, EngineError> {
    cfg.check(bars.len(), strategy)?;
    if bars.is_empty() || bars.iter().all(|b| b.is_empty()) {
        return Err(EngineError::Bars("there are no bars to run on".into()));
    }
    let mut plans = Vec::with_capacity(bars.len());
    for (s, b) in bars.iter().enumerate() {
        b.check()?;
        let known = b.known();
        let d = if strategy == Strategy::Weights {
            weight_decisions(b, weights.get(s).map_or(&[][..], |w| &w[..]))
        } else {
            decisions(&events(strategy, b, &Closes::new(&b.close)), &known, cfg.direction)
        };
        plans.push(d);
    }
    Ok(simulate(bars, &plans, cfg, keep_equity))
}

/// Runs one symbol with precomputed events (the grid's path: the moving averages are shared by
/// every parameter pair of a symbol).
pub fn run_events(bars: &Bars, ev: &[i8], known: &[usize], cfg: &Config, keep_equity: bool) -> Outcome {
    let plan = decisions(ev, known, cfg.direction);
    simulate(std::slice::from_ref(bars), std::slice::from_ref(&plan), cfg, keep_equity)
}

/// Each bar's usable prefix (see [`Bars`]), for [`run_events`].
pub fn known(bars: &Bars) -> Vec<usize> {
    bars.known()
}

fn simulate(bars: &[Bars], plans: &[Vec<Option<Target>>], cfg: &Config, keep_equity: bool) -> Outcome {
    let m = bars.len();
    // the timeline: every ts of any symbol, in order
    let mut timeline: Vec<i64> = if m == 1 {
        bars[0].ts.clone()
    } else {
        let mut t: Vec<i64> = bars.iter().flat_map(|b| b.ts.iter().copied()).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    let steps = timeline.len();
    let mut book = Book {
        cfg,
        cash: cfg.init_cash,
        pos: vec![0.0; m],
        mark: vec![f64::NAN; m],
        flow: vec![0.0; m],
        out: Outcome { returns: Vec::with_capacity(steps), ..Outcome::default() },
    };
    if keep_equity {
        book.out.equity.reserve(steps);
    }
    let mut cursor = vec![0usize; m];
    // a decision waiting for its fill: (symbol's bar index it fills at, target)
    let mut pending: Vec<Option<(usize, Target)>> = vec![None; m];
    let mut here: Vec<usize> = Vec::with_capacity(m);
    let mut prev_equity = cfg.init_cash;
    let mut exposed = 0usize;
    for &now in &timeline {
        if book.out.bust {
            book.out.returns.push(0.0);
            if keep_equity {
                book.out.equity.push(0.0);
            }
            continue;
        }
        here.clear();
        for s in 0..m {
            let c = cursor[s];
            if c < bars[s].len() && bars[s].ts[c] == now {
                here.push(s);
            }
        }
        // 1. fills at this bar's open, then 2. at its close (decisions of the bar before)
        for at_open in [true, false] {
            for sells in [true, false] {
                for &s in &here {
                    if let Some((i, target)) = pending[s] {
                        let opens = cfg.execution == Execution::NextOpen;
                        if i == cursor[s] && opens == at_open {
                            let b = &bars[s];
                            let price = if at_open { b.open[i] } else { b.close[i] };
                            book.apply(s, target, price, sells);
                        }
                    }
                }
            }
            for &s in &here {
                if let Some((i, _)) = pending[s] {
                    let opens = cfg.execution == Execution::NextOpen;
                    if i == cursor[s] && opens == at_open {
                        pending[s] = None;
                    }
                }
            }
        }
        // 3. the close marks the position; 4. this bar's decisions (same_close fills now)
        for &s in &here {
            book.mark[s] = bars[s].close[cursor[s]];
        }
        for sells in [true, false] {
            for &s in &here {
                let i = cursor[s];
                if let Some(target) = plans[s][i] {
                    match cfg.execution {
                        Execution::SameClose => book.apply(s, target, bars[s].close[i], sells),
                        _ if i + 1 < bars[s].len() => pending[s] = Some((i + 1, target)),
                        _ => {}
                    }
                }
            }
        }
        for &s in &here {
            cursor[s] += 1;
        }
        let mut equity = book.cash;
        let mut holding = false;
        for s in 0..m {
            if book.pos[s] != 0.0 {
                equity += book.pos[s] * book.mark[s];
                holding = true;
            }
        }
        if equity <= 0.0 {
            equity = 0.0;
            book.out.bust = true;
        }
        exposed += holding as usize;
        let r = if prev_equity > 0.0 { equity / prev_equity - 1.0 } else { 0.0 };
        book.out.returns.push(r);
        if keep_equity {
            book.out.equity.push(equity);
        }
        prev_equity = equity;
    }
    timeline.clear();
    book.out.final_equity = prev_equity;
    book.out.exposure = if steps > 0 { exposed as f64 / steps as f64 } else { 0.0 };
    book.out
}

#[cfg(test)]
pub(crate) mod tests;
