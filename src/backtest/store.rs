//! The backtests' SPI: reading bars and target weights as the caller (its row level security
//! decides what it sees), and recording results through `quantops._record_run`.

use super::engine::{Bars, TargetWeight};
use crate::spi::ReportError;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use serde_json::Value;

/// What the data read looked like: each symbol's bars with their volumes (for the fingerprint).
pub struct Read {
    pub bars: Vec<Bars>,
    pub volume: Vec<Vec<f64>>,
}

fn micros(t: Vec<TimestampWithTimeZone>) -> Vec<i64> {
    t.into_iter().map(pg_sys::TimestampTz::from).collect()
}

/// Reads the bars of `symbols` with ts in [start, end] (either may be None: unbounded), each
/// symbol's in ts order; a user's own bar replaces the shared one at the same ts. `shared_only`:
/// only rows without an owner (the scheduled runner, which bypasses RLS). A symbol with no bar
/// is left out (the caller names it).
pub fn bars(symbols: &[String], start: Option<TimestampWithTimeZone>, end: Option<TimestampWithTimeZone>, shared_only: bool) -> Read {
    let mut out = Read { bars: Vec::with_capacity(symbols.len()), volume: Vec::with_capacity(symbols.len()) };
    Spi::connect(|c| {
        let rows = c
            .select(
                "select b.symbol, pg_catalog.array_agg(b.ts order by b.ts), \
                        pg_catalog.array_agg(coalesce(b.available_at, b.ts) order by b.ts), \
                        pg_catalog.array_agg(b.open order by b.ts), pg_catalog.array_agg(b.high order by b.ts), \
                        pg_catalog.array_agg(b.low order by b.ts), pg_catalog.array_agg(b.close order by b.ts), \
                        pg_catalog.array_agg(b.volume order by b.ts) \
                 from (select distinct on (x.symbol, x.ts) x.symbol, x.ts, x.available_at, x.open, x.high, x.low, x.close, x.volume \
                         from quantops.bars x \
                        where x.symbol operator(pg_catalog.=) any ($1::text[]) \
                          and ($2::timestamptz is null or x.ts operator(pg_catalog.>=) $2::timestamptz) \
                          and ($3::timestamptz is null or x.ts operator(pg_catalog.<=) $3::timestamptz) \
                          and (not $4::boolean or x.owner is null) \
                        order by x.symbol, x.ts, x.owner is null) b \
                 group by b.symbol",
                None,
                &[symbols.to_vec().into(), start.into(), end.into(), shared_only.into()],
            )
            .unwrap_or_else(|e| crate::spi::failed("reading quantops.bars", e).report_error());
        let mut by_symbol = std::collections::HashMap::new();
        for r in rows {
            let f = |i: usize| r.get::<Vec<f64>>(i).ok().flatten().unwrap_or_default();
            let t = |i: usize| micros(r.get::<Vec<TimestampWithTimeZone>>(i).ok().flatten().unwrap_or_default());
            let symbol: String = r.get(1).ok().flatten().unwrap_or_default();
            let b = Bars { symbol: symbol.clone(), ts: t(2), available_at: t(3), open: f(4), high: f(5), low: f(6), close: f(7) };
            by_symbol.insert(symbol, (b, f(8)));
        }
        // in the caller's order of symbols
        for s in symbols {
            if let Some((b, v)) = by_symbol.remove(s) {
                out.bars.push(b);
                out.volume.push(v);
            }
        }
    });
    out
}

/// The target weights named `name` of each symbol, by the time they become available.
pub fn weights(name: &str, symbols: &[String]) -> Vec<Vec<TargetWeight>> {
    let mut by_symbol: std::collections::HashMap<String, Vec<TargetWeight>> = std::collections::HashMap::new();
    Spi::connect(|c| {
        let rows = c
            .select(
                "select w.symbol, coalesce(w.available_at, w.ts), w.weight \
                   from (select distinct on (x.symbol, x.ts) x.symbol, x.ts, x.available_at, x.weight \
                           from quantops.target_weights x \
                          where x.strategy operator(pg_catalog.=) $1::text and x.symbol operator(pg_catalog.=) any ($2::text[]) \
                          order by x.symbol, x.ts, x.owner is null) w \
                  order by w.symbol, 2, w.ts",
                None,
                &[name.into(), symbols.to_vec().into()],
            )
            .unwrap_or_else(|e| crate::spi::failed("reading quantops.target_weights", e).report_error());
        for r in rows {
            let symbol: String = r.get(1).ok().flatten().unwrap_or_default();
            let at: Option<TimestampWithTimeZone> = r.get(2).ok().flatten();
            let weight: f64 = r.get(3).ok().flatten().unwrap_or(0.0);
            if let Some(at) = at {
                by_symbol.entry(symbol).or_default().push(TargetWeight { available_at: pg_sys::TimestampTz::from(at), weight });
            }
        }
    });
    symbols.iter().map(|s| by_symbol.remove(s).unwrap_or_default()).collect()
}

/// The caller's user id (Supabase's JWT `sub`), as the run id includes it.
pub fn user() -> Option<String> {
    crate::spi::read_one::<String>("select quantops.uid()::text", &[])
        .unwrap_or_else(|e| crate::spi::failed("reading the caller's user", e).report_error())
}

/// One result to record.
pub struct Record<'a> {
    pub run_id: &'a str,
    pub label: &'a str,
    pub start: i64,
    pub end: i64,
    pub m: &'a super::core::Metrics,
    pub turnover: f64,
    pub trades: i32,
    pub metrics: Value,
    pub model: Option<&'a str>,
    pub model_version: Option<i32>,
}

fn ts(t: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(t)
        .unwrap_or_else(|_| crate::error::raise(pgrx::PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW, "a bar's time is out of range"))
}

/// Records a result through `quantops._record_run` (which calls record_backtest): the row as
/// jsonb, `created` false when the same run was recorded before.
pub fn record(r: &Record) -> Value {
    let finite = |x: Option<f64>| x.filter(|v| v.is_finite());
    crate::spi::write_one::<pgrx::JsonB>(
        "select quantops._record_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            r.run_id.into(),
            r.label.into(),
            ts(r.start).into(),
            ts(r.end).into(),
            finite(r.m.sharpe).into(),
            finite(r.m.sortino).into(),
            Some(r.m.max_drawdown).into(),
            finite(Some(r.m.cagr)).into(),
            finite(r.m.volatility).into(),
            Some(r.m.hit_rate).into(),
            finite(Some(r.turnover)).into(),
            r.trades.into(),
            pgrx::JsonB(r.metrics.clone()).into(),
            r.model.into(),
            r.model_version.into(),
        ],
    )
    .unwrap_or_else(|e| crate::spi::failed("recording a backtest", e).report_error())
    .map(|j| j.0)
    .unwrap_or(Value::Null)
}
