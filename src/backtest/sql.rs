//! `quantops.backtest_metrics(returns, periods_per_year, risk_free)`: the metrics of a return
//! series, computed in Rust so that flows, agents and SQL compute them the same way.

use super::core::{self as metrics, MetricsError};
use crate::error::SqlError;
use crate::sql_error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

impl SqlError for MetricsError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            MetricsError::Null(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        }
    }
}
sql_error!(MetricsError);

/// Sharpe, sortino, max drawdown, CAGR, volatility, hit rate and total return of periodic simple
/// returns (see src/backtest/core.rs for the exact definitions).
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn backtest_metrics(
    returns: Option<Vec<Option<f64>>>,
    periods_per_year: default!(Option<i32>, "252"),
    risk_free: default!(Option<f64>, "0"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(n, i32),
            name!(sharpe, Option<f64>),
            name!(sortino, Option<f64>),
            name!(max_drawdown, f64),
            name!(cagr, f64),
            name!(volatility, Option<f64>),
            name!(hit_rate, f64),
            name!(total_return, f64),
        ),
    >,
    ErrorReport,
> {
    let returns = returns
        .ok_or(MetricsError::Null(0))
        .map_err(|_| ErrorReport::new(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "returns must not be null", "quantops"))?;
    let m = metrics::compute(&returns, periods_per_year.unwrap_or(252), risk_free.unwrap_or(0.0))?;
    Ok(TableIterator::once((m.n as i32, m.sharpe, m.sortino, m.max_drawdown, m.cagr, m.volatility, m.hit_rate, m.total_return)))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.backtest_metrics(double precision[], integer, double precision)', 'authenticated');",
    name = "grant_backtest_metrics",
    requires = [backtest_metrics]
);

// ---------------------------------------------------------------------------------------------
// The runner: run_backtest, run_backtest_grid and the scheduled-backtest-runner job
// ---------------------------------------------------------------------------------------------

use super::engine::{self, Bars, EngineError};
use super::grid::{self, RankBy, Summary};
use super::spec::{self, Options, SpecError};
use super::store;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

impl SqlError for SpecError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            SpecError::Invalid(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            SpecError::TooLarge(_) => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        }
    }
}
sql_error!(SpecError);

impl SqlError for EngineError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            // bars that the tables would refuse reach the engine only from a view or a bug
            EngineError::Bars(_) => PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            EngineError::Config(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        }
    }
}
sql_error!(EngineError);

fn err(code: PgSqlErrorCode, m: impl Into<String>) -> ErrorReport {
    ErrorReport::new(code, m.into(), "quantops")
}

/// The symbols of a call: not null, not empty, no NULL element, duplicates dropped (first kept).
fn symbols_of(symbols: Option<Vec<Option<String>>>) -> Result<Vec<String>, ErrorReport> {
    let s = symbols.ok_or_else(|| err(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "symbols must not be null"))?;
    if s.is_empty() {
        return Err(err(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "symbols must name at least one symbol"));
    }
    if s.len() > 10_000 {
        return Err(err(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, "at most 10000 symbols a call"));
    }
    let mut out: Vec<String> = Vec::with_capacity(s.len());
    for x in s {
        let x = x.ok_or_else(|| err(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "symbols must not contain null"))?;
        if !out.contains(&x) {
            out.push(x);
        }
    }
    Ok(out)
}

/// Every symbol has bars: else 42704 naming the first without.
fn all_found(symbols: &[String], read: &store::Read) -> Result<(), ErrorReport> {
    if let Some(missing) = symbols.iter().find(|s| !read.bars.iter().any(|b| &b.symbol == *s)) {
        return Err(err(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("no bars of symbol \"{missing}\" in the period"))
            .set_hint("quantops.bars holds the bars a backtest reads; a user sees the shared bars and its own"));
    }
    Ok(())
}

/// Runs `f` on quantops' thread pool while this backend waits, checking for interrupts (cancel,
/// statement_timeout) every 10 ms; an interrupt raises here and tells the threads to stop.
fn in_pool<R: Send + 'static>(f: impl FnOnce(&AtomicBool) -> R + Send + 'static) -> Result<R, ErrorReport> {
    let pool = crate::threads::pool().map_err(|e| err(PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES, e))?;
    let cancel = Arc::new(AtomicBool::new(false));
    /// Sets the flag on every way out, an error's unwinding included.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(cancel.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let c = cancel.clone();
    pool.spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&c)));
        let _ = tx.send(r);
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(10)) {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(err(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "the backtest's threads failed")
                    .set_hint("this is a bug in quantops; please report it with the call that raised it"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                pgrx::check_for_interrupts!();
            }
        }
    }
}

/// What is stored in backtest_results.metrics next to the columns.
fn metrics_json(strategy: &str, params: &Value, symbols: &[String], o: &Options, s: &Summary, bars: usize, fingerprint: &str) -> Value {
    let m = &s.metrics;
    json!({
        "engine": spec::ENGINE,
        "strategy": strategy,
        "params": params,
        "symbols": symbols,
        "options": o.canonical(),
        "total_return": m.total_return,
        "final_equity": s.final_equity,
        "fees_paid": s.fees_paid,
        "orders": s.orders,
        "trades": s.trades,
        "closed_trades": s.closed_trades,
        "win_rate": s.win_rate(),
        "exposure": s.exposure,
        "traded_value": s.traded_value,
        "bust": s.bust,
        "bars": bars,
        "data_fingerprint": fingerprint,
    })
}

/// Turnover: the value traded over the initial cash, a year.
fn turnover(s: &Summary, o: &Options, steps: usize) -> f64 {
    let years = steps.max(1) as f64 / o.periods_per_year as f64;
    s.traded_value / o.config.init_cash / years
}

/// What a result was computed from, as recorded with it.
struct Recorded<'a> {
    strategy: &'a str,
    params: &'a Value,
    symbols: &'a [String],
    opts: &'a Options,
    fingerprint: &'a str,
}

impl Recorded<'_> {
    /// Records `s` through `_record_run` under `run_id`; `(first, last, steps)` is its timeline.
    fn record(
        &self,
        run_id: &str,
        label: &str,
        s: &Summary,
        (first, last, steps): (i64, i64, usize),
        model: Option<&str>,
        model_version: Option<i32>,
    ) -> Value {
        store::record(&store::Record {
            run_id,
            label,
            start: first,
            end: last,
            m: &s.metrics,
            turnover: turnover(s, self.opts, steps),
            trades: s.trades as i32,
            metrics: metrics_json(self.strategy, self.params, self.symbols, self.opts, s, steps, self.fingerprint),
            model,
            model_version,
        })
    }
}

/// Runs one backtest and records it: the body of quantops.run_backtest.
#[allow(clippy::too_many_arguments)]
fn run_one(
    strategy_name: &str,
    symbols: Vec<String>,
    params: &Value,
    options: &Value,
    start: Option<TimestampWithTimeZone>,
    end: Option<TimestampWithTimeZone>,
    model: Option<&str>,
    model_version: Option<i32>,
) -> Result<Value, ErrorReport> {
    let (strategy, weights_name) = spec::strategy(strategy_name, params)?;
    let opts = spec::options(options, symbols.len(), strategy_name)?;
    opts.config.check(symbols.len(), strategy)?;
    let read = store::bars(&symbols, start, end, false);
    all_found(&symbols, &read)?;
    let mut fp = spec::Fingerprint::default();
    for (b, v) in read.bars.iter().zip(&read.volume) {
        fp.bars(b, v);
    }
    let weights = match &weights_name {
        Some(name) => {
            let w = store::weights(name, &symbols);
            if w.iter().all(|x| x.is_empty()) {
                return Err(err(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("no target weights named \"{name}\" for these symbols")));
            }
            if opts.config.direction == engine::Direction::LongOnly && w.iter().flatten().any(|x| x.weight < 0.0) {
                return Err(err(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("the target weights \"{name}\" go short; run them with \"direction\": \"long_short\""),
                ));
            }
            for (s, x) in symbols.iter().zip(&w) {
                fp.weights(s, x);
            }
            w
        }
        None => vec![],
    };
    let fingerprint = fp.hex();
    let (first, last, steps) = span(&read.bars);
    if first >= last {
        return Err(err(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "a backtest needs bars at two times at least"));
    }
    let bars = Arc::new(read.bars);
    let (b2, cfg) = (bars.clone(), opts.config);
    let outcome = in_pool(move |_| engine::run(strategy, &b2, &weights, &cfg, false))??;
    let summary = Summary::of(strategy, &outcome, opts.periods_per_year, opts.risk_free);
    let params = spec::params_json(strategy, weights_name.as_deref());
    let user = store::user();
    let run_id = spec::run_id(strategy_name, &params, &symbols, &opts.canonical(), user.as_deref(), &fingerprint, model.zip(model_version));
    let label = opts.label.clone().unwrap_or_else(|| format!("{strategy_name}:{}", symbols.join(",")));
    let what = Recorded { strategy: strategy_name, params: &params, symbols: &symbols, opts: &opts, fingerprint: &fingerprint };
    Ok(what.record(&run_id, &label, &summary, (first, last, steps), model, model_version))
}

/// A call that records refuses on a hot standby first (25006), as every writing function does.
fn refuse_on_replica(name: &str, why: &str, hint: &str) -> Result<(), ErrorReport> {
    if crate::spi::read_one::<bool>("select pg_catalog.pg_is_in_recovery()", &[]).ok().flatten().unwrap_or(false) {
        return Err(err(PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION, format!("cannot run quantops.{name}() on a read replica"))
            .set_detail(format!("this server is a hot standby in recovery: {why}"))
            .set_hint(hint.to_string()));
    }
    Ok(())
}

/// The first and last time of any bar, and the number of distinct times.
fn span(bars: &[Bars]) -> (i64, i64, usize) {
    let mut t: Vec<i64> = bars.iter().flat_map(|b| b.ts.iter().copied()).collect();
    t.sort_unstable();
    t.dedup();
    (t.first().copied().unwrap_or(0), t.last().copied().unwrap_or(0), t.len())
}

/// Runs a backtest over quantops.bars (as the caller: it sees the shared bars and its own) and
/// records it through record_backtest; the recorded row as jsonb (quantops.run_backtest returns
/// it as a backtest_results row).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn _run_backtest(
    strategy: Option<&str>,
    symbols: Option<Vec<Option<String>>>,
    params: Option<JsonB>,
    options: Option<JsonB>,
    period_start: Option<TimestampWithTimeZone>,
    period_end: Option<TimestampWithTimeZone>,
    model: Option<&str>,
    model_version: Option<i32>,
) -> Result<JsonB, ErrorReport> {
    refuse_on_replica("run_backtest", "it records its result", "call it on the primary; run_backtest_grid(..., keep => 'none') runs here")?;
    let strategy = strategy.ok_or_else(|| err(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "strategy must not be null"))?;
    let symbols = symbols_of(symbols)?;
    let params = params.map_or(json!({}), |j| j.0);
    let options = options.map_or(json!({}), |j| j.0);
    if (model.is_none()) != (model_version.is_none()) {
        return Err(err(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "give model and model_version together"));
    }
    Ok(JsonB(run_one(strategy, symbols, &params, &options, period_start, period_end, model, model_version)?))
}
pgrx::extension_sql!(
    r#"
insert into quantops.routine_grants (routine, tier) values ('quantops._run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer)', 'authenticated');
-- The recorded row, typed. Runs as the caller (its RLS decides which bars it reads).
create function quantops.run_backtest(strategy text, symbols text[], params jsonb default '{}'::jsonb,
                                      options jsonb default '{}'::jsonb, period_start timestamptz default null,
                                      period_end timestamptz default null, model text default null,
                                      model_version integer default null)
returns quantops.backtest_results
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select * from pg_catalog.jsonb_populate_record(null::quantops.backtest_results,
    quantops._run_backtest(strategy, symbols, params, options, period_start, period_end, model, model_version))
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer)', 'authenticated');
comment on function quantops.run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer) is
  'runs a strategy (ma_cross, breakout, target_weights) over quantops.bars point in time and records it through record_backtest; its run id hashes every input and the data read';
"#,
    name = "run_backtest",
    requires = [_run_backtest, "backtest"]
);

/// A sweep over symbols (each its own backtest) with shared bars-reading, threads and
/// recording; the scheduled runner calls it too.
#[allow(clippy::too_many_arguments)]
fn sweep_symbols(
    strategy_name: &str,
    symbols: Vec<String>,
    grid_spec: &Value,
    options: &Value,
    start: Option<TimestampWithTimeZone>,
    end: Option<TimestampWithTimeZone>,
    keep: &str,
    top_n: usize,
    rank_by: RankBy,
    shared_only: bool,
) -> Result<Vec<(String, Value, i32, String, bool, Summary)>, ErrorReport> {
    let strategies = spec::grid(strategy_name, grid_spec)?;
    let opts = spec::options(options, 1, strategy_name)?;
    for s in &strategies {
        opts.config.check(1, *s)?;
    }
    let read = store::bars(&symbols, start, end, shared_only);
    all_found(&symbols, &read)?;
    let mut prints = Vec::with_capacity(read.bars.len());
    for (b, v) in read.bars.iter().zip(&read.volume) {
        let mut fp = spec::Fingerprint::default();
        fp.bars(b, v);
        prints.push(fp.hex());
        let (first, last, _) = span(std::slice::from_ref(b));
        if first >= last {
            return Err(err(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("symbol \"{}\" has bars at fewer than two times", b.symbol),
            ));
        }
    }
    let bars = Arc::new(read.bars);
    let strategies = Arc::new(strategies);
    let (b2, s2, cfg, ppy, rf) = (bars.clone(), strategies.clone(), opts.config, opts.periods_per_year, opts.risk_free);
    let keep_all = keep == "all";
    // one symbol at a time (its moving averages, one summary a parameter set), its parameter
    // sets in parallel; a symbol's results are cut to the top N before the next symbol runs
    let per_symbol: Vec<Vec<Summary>> = in_pool(move |cancel| -> Result<Option<Vec<Vec<Summary>>>, EngineError> {
        let mut out = Vec::with_capacity(b2.len());
        for b in b2.iter() {
            match grid::sweep(b, &s2, &cfg, ppy, rf, cancel)? {
                Some(all) => out.push(if keep_all { all } else { grid::top(all, rank_by, top_n) }),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    })??
    .ok_or_else(|| err(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, "the backtest grid was cancelled"))?;
    let user = store::user();
    let record = keep != "none";
    let mut rows = Vec::new();
    let canonical = opts.canonical();
    for ((b, results), fingerprint) in bars.iter().zip(per_symbol).zip(&prints) {
        let symbols = vec![b.symbol.clone()];
        let (first, last, steps) = span(std::slice::from_ref(b));
        let ranked = if keep_all { grid::top(results, rank_by, usize::MAX) } else { results };
        for (i, s) in ranked.into_iter().enumerate() {
            let params = spec::params_json(s.strategy, None);
            let run_id = spec::run_id(strategy_name, &params, &symbols, &canonical, user.as_deref(), fingerprint, None);
            if record {
                pgrx::check_for_interrupts!();
                let label = opts.label.clone().unwrap_or_else(|| format!("{strategy_name}:{}", b.symbol));
                let what = Recorded { strategy: strategy_name, params: &params, symbols: &symbols, opts: &opts, fingerprint };
                what.record(&run_id, &label, &s, (first, last, steps), None, None);
            }
            rows.push((b.symbol.clone(), params, i as i32 + 1, run_id, record, s));
        }
    }
    Ok(rows)
}

/// Sweeps a strategy's parameters over each symbol (each symbol its own backtest, all in
/// parallel on quantops' threads), recording all results, the top N a symbol by a metric, or
/// none; answers a row a result kept, best first.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn run_backtest_grid(
    strategy: Option<&str>,
    symbols: Option<Vec<Option<String>>>,
    grid: Option<JsonB>,
    options: default!(Option<JsonB>, "'{}'::jsonb"),
    period_start: default!(Option<TimestampWithTimeZone>, "null"),
    period_end: default!(Option<TimestampWithTimeZone>, "null"),
    keep: default!(Option<&str>, "'top'"),
    top_n: default!(Option<i32>, "10"),
    rank_by: default!(Option<&str>, "'sharpe'"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(symbol, String),
            name!(params, JsonB),
            name!(rank, i32),
            name!(run_id, String),
            name!(recorded, bool),
            name!(sharpe, Option<f64>),
            name!(sortino, Option<f64>),
            name!(max_drawdown, f64),
            name!(cagr, f64),
            name!(total_return, f64),
            name!(trades, i32),
            name!(fees_paid, f64),
        ),
    >,
    ErrorReport,
> {
    let strategy = strategy.ok_or_else(|| err(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "strategy must not be null"))?;
    let symbols = symbols_of(symbols)?;
    let grid_spec = grid.ok_or_else(|| err(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "grid must not be null"))?.0;
    let keep = keep.unwrap_or("top");
    if !["all", "top", "none"].contains(&keep) {
        return Err(err(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("keep must be all, top or none, not \"{keep}\"")));
    }
    let top_n = top_n.unwrap_or(10);
    if !(1..=100_000).contains(&top_n) {
        return Err(err(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "top_n must be between 1 and 100000"));
    }
    let rank_name = rank_by.unwrap_or("sharpe");
    let rank = RankBy::parse(rank_name).ok_or_else(|| {
        err(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("rank_by must be sharpe, sortino, cagr, total_return or max_drawdown, not \"{rank_name}\""),
        )
    })?;
    if keep != "none" {
        refuse_on_replica("run_backtest_grid", "keep all and top record results", "call it on the primary, or with keep => 'none' here")?;
    }
    let options = options.map_or(json!({}), |j| j.0);
    let rows = sweep_symbols(strategy, symbols, &grid_spec, &options, period_start, period_end, keep, top_n as usize, rank, false)?;
    Ok(TableIterator::new(rows.into_iter().map(|(symbol, params, rank, run_id, recorded, s)| {
        (
            symbol,
            JsonB(params),
            rank,
            run_id,
            recorded,
            s.metrics.sharpe,
            s.metrics.sortino,
            s.metrics.max_drawdown,
            s.metrics.cagr,
            s.metrics.total_return,
            s.trades as i32,
            s.fees_paid,
        )
    })))
}
pgrx::extension_sql!(
    "insert into quantops.routine_grants (routine, tier) values ('quantops.run_backtest_grid(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer, text)', 'authenticated');",
    name = "grant_run_backtest_grid",
    requires = [run_backtest_grid]
);

/// The scheduled-backtest-runner job: every enabled schedule, over the shared bars, recorded
/// shared. A schedule that fails records its error and the others still run.
pub fn scheduled_runner() -> Result<crate::schedule::JobOutcome, String> {
    let schedules: Vec<(String, String, Vec<String>, Value, Value, Option<TimestampWithTimeZone>, String, i32, String)> =
        Spi::connect(|c| {
            c.select(
                "select name, strategy, symbols, grid, options, \
                    case when lookback is null then null else pg_catalog.now() operator(pg_catalog.-) lookback end, keep, top_n, rank_by \
               from quantops.backtest_schedules where enabled order by name",
                None,
                &[],
            )
            .map(|rows| {
                rows.map(|r| {
                    (
                        r.get::<String>(1).ok().flatten().unwrap_or_default(),
                        r.get::<String>(2).ok().flatten().unwrap_or_default(),
                        r.get::<Vec<String>>(3).ok().flatten().unwrap_or_default(),
                        r.get::<JsonB>(4).ok().flatten().map_or(Value::Null, |j| j.0),
                        r.get::<JsonB>(5).ok().flatten().map_or(Value::Null, |j| j.0),
                        r.get::<TimestampWithTimeZone>(6).ok().flatten(),
                        r.get::<String>(7).ok().flatten().unwrap_or_default(),
                        r.get::<i32>(8).ok().flatten().unwrap_or(10),
                        r.get::<String>(9).ok().flatten().unwrap_or_default(),
                    )
                })
                .collect()
            })
        })
        .map_err(|e| format!("reading quantops.backtest_schedules: {e}"))?;
    let (mut recorded, mut failed) = (0i64, Vec::new());
    for (name, strategy, symbols, grid_spec, options, start, keep, top_n, rank_by) in schedules {
        let rank = RankBy::parse(&rank_by).unwrap_or(RankBy::Sharpe);
        let result = sweep_symbols(&strategy, symbols, &grid_spec, &options, start, None, &keep, top_n.max(1) as usize, rank, true);
        let error = match &result {
            Ok(rows) => {
                recorded += rows.len() as i64;
                None
            }
            Err(e) => {
                failed.push(name.clone());
                Some(e.message().to_string())
            }
        };
        crate::spi::run(
            "recording a schedule's run",
            "update quantops.backtest_schedules set last_run_at = pg_catalog.now(), last_error = $2 where name operator(pg_catalog.=) $1",
            &[name.as_str().into(), error.into()],
        );
    }
    Ok(crate::schedule::JobOutcome { rows: recorded, details: json!({ "recorded": recorded, "failed": failed }) })
}

/// The backtests' part in the worker: the scheduled runner.
pub static CAPABILITY: crate::schedule::Capability = crate::schedule::Capability {
    name: "backtest",
    jobs: &[crate::schedule::Job { name: "scheduled-backtest-runner", every: Some("1 day"), body: scheduled_runner, worker_body: None }],
    each_pass: None,
    on_worker_start: None,
};

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn metrics_from_sql() {
        let (n, mdd): (Option<i32>, Option<f64>) =
            Spi::get_two("select n, max_drawdown from quantops.backtest_metrics(array[0.1, -0.5, 0.2])").unwrap();
        assert_eq!(n, Some(3));
        assert!((mdd.unwrap() - 0.5).abs() < 1e-12);
    }

    #[pg_test(error = "returns[2] is not a finite number")]
    fn metrics_refuse_nan() {
        Spi::run("select * from quantops.backtest_metrics(array[0.1, 'NaN'::float8])").unwrap();
    }
}
