-- quantops backtests: market data with point-in-time semantics, stored target weights, the
-- scheduled runner's schedules, and the recording path of the engine's results (the engine and
-- run_backtest/run_backtest_grid are Rust: src/backtest/).

-- ---------------------------------------------------------------------------------------------
-- Bars: one a symbol and ts. ts is the time the bar's close is known at the earliest (a daily
-- bar's date); available_at (null: ts) is when a backtest may use it. A row with an owner is
-- that user's; rows without one are shared market data, written by roles that bypass RLS. A
-- user's own bar replaces the shared one at the same ts in that user's backtests.
-- ---------------------------------------------------------------------------------------------
create table quantops.bars (
  symbol        text not null,
  ts            timestamptz not null,
  open          double precision not null,
  high          double precision not null,
  low           double precision not null,
  close         double precision not null,
  volume        double precision not null default 0,
  available_at  timestamptz,
  owner         uuid default quantops.uid(),
  constraint bars_key unique nulls not distinct (symbol, ts, owner),
  constraint bars_symbol_check check (pg_catalog.length(symbol) between 1 and 64 and symbol !~ '[[:cntrl:]]'),
  constraint bars_time_check check (pg_catalog.isfinite(ts) and (available_at is null or pg_catalog.isfinite(available_at))),
  constraint bars_available_check check (available_at >= ts),
  constraint bars_finite_check check (quantops._finite(open) and quantops._finite(high) and quantops._finite(low)
                                      and quantops._finite(close) and quantops._finite(volume)),
  constraint bars_positive_check check (low > 0 and volume >= 0),
  constraint bars_range_check check (high >= low and close between low and high and open between low and high)
);
comment on table quantops.bars is
  'market data for backtests: OHLCV a symbol and ts (the bar''s close time), usable from available_at (null: ts)';

-- Target weights: from available_at (null: ts) on, hold weight (a fraction of equity, negative
-- for a short) in the symbol. `strategy` names a set of them (run_backtest('target_weights', ...,
-- '{"name": ...}')).
create table quantops.target_weights (
  strategy      text not null,
  symbol        text not null,
  ts            timestamptz not null,
  weight        double precision not null,
  available_at  timestamptz,
  owner         uuid default quantops.uid(),
  constraint target_weights_key unique nulls not distinct (strategy, symbol, ts, owner),
  constraint target_weights_strategy_check check (pg_catalog.length(strategy) between 1 and 128 and strategy !~ '[[:cntrl:]]'),
  constraint target_weights_symbol_check check (pg_catalog.length(symbol) between 1 and 64 and symbol !~ '[[:cntrl:]]'),
  constraint target_weights_time_check check (pg_catalog.isfinite(ts) and (available_at is null or pg_catalog.isfinite(available_at))),
  constraint target_weights_available_check check (available_at >= ts),
  constraint target_weights_weight_check check (quantops._finite(weight) and weight between -1 and 1)
);
comment on table quantops.target_weights is
  'stored target weights a strategy follows in backtests: weight of equity in symbol from available_at (null: ts) on';

-- The scheduled-backtest-runner job's work: each enabled schedule is swept over the shared
-- bars (rows without an owner) and its best results are recorded, shared.
create table quantops.backtest_schedules (
  name       text primary key check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  strategy   text not null check (strategy in ('ma_cross', 'breakout')),
  symbols    text[] not null check (pg_catalog.cardinality(symbols) between 1 and 10000),
  grid       jsonb not null check (pg_catalog.jsonb_typeof(grid) = 'object'),
  options    jsonb not null default '{}'::jsonb check (pg_catalog.jsonb_typeof(options) = 'object'),
  lookback   interval check (lookback > interval '0'),
  keep       text not null default 'top' check (keep in ('all', 'top')),
  top_n      integer not null default 10 check (top_n between 1 and 1000),
  rank_by    text not null default 'sharpe' check (rank_by in ('sharpe', 'sortino', 'cagr', 'total_return', 'max_drawdown')),
  enabled    boolean not null default true,
  last_run_at  timestamptz,
  last_error   text
);
comment on table quantops.backtest_schedules is
  'parameter sweeps the scheduled-backtest-runner job runs over the shared bars';
insert into quantops.jobs (name, run_every, description) values
  ('scheduled-backtest-runner', interval '1 day', 'run every enabled quantops.backtest_schedules sweep over the shared bars and record its best results');

alter table quantops.bars               enable row level security;
alter table quantops.target_weights     enable row level security;
alter table quantops.backtest_schedules enable row level security;
-- shared rows (no owner) are readable by every role granted the table; own rows by their owner
create policy visible on quantops.bars for select using (owner is null or owner = quantops.uid());
create policy own_rows on quantops.bars for insert with check (owner = quantops.uid());
create policy own_rows_update on quantops.bars for update using (owner = quantops.uid()) with check (owner = quantops.uid());
create policy own_rows_delete on quantops.bars for delete using (owner = quantops.uid());
create policy visible on quantops.target_weights for select using (owner is null or owner = quantops.uid());
create policy own_rows on quantops.target_weights for insert with check (owner = quantops.uid());
create policy own_rows_update on quantops.target_weights for update using (owner = quantops.uid()) with check (owner = quantops.uid());
create policy own_rows_delete on quantops.target_weights for delete using (owner = quantops.uid());
create policy readable on quantops.backtest_schedules for select using (true);

select pg_catalog.pg_extension_config_dump('quantops.bars', '');
select pg_catalog.pg_extension_config_dump('quantops.target_weights', '');
select pg_catalog.pg_extension_config_dump('quantops.backtest_schedules', '');

-- Records a result of the engine (run_backtest, run_backtest_grid, the scheduled runner) through
-- record_backtest, for callers that may run backtests but not record arbitrary ones: the row is
-- the caller's (its owner is the caller's user), and linking it to a model version, which a
-- promotion gate reads, needs the right to record_backtest itself.
create function quantops._record_run(run_id text, strategy text, period_start timestamptz, period_end timestamptz,
                                     sharpe double precision, sortino double precision, max_drawdown double precision,
                                     cagr double precision, volatility double precision, hit_rate double precision,
                                     turnover double precision, trades integer, metrics jsonb,
                                     model text, model_version integer)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if model is not null and not pg_catalog.has_function_privilege(quantops._caller_role(),
      'quantops.record_backtest(text, text, timestamptz, timestamptz, double precision, double precision, double precision, double precision, double precision, double precision, double precision, integer, jsonb, text, integer, text)',
      'execute') then
    raise exception 'permission denied to link a backtest to model "%"', model using errcode = '42501',
      hint = 'run it as a role that may execute quantops.record_backtest (service_role), or without model';
  end if;
  if pg_catalog.left(run_id, 3) operator(pg_catalog.<>) 'bt_' then
    raise exception 'run ids of the engine start with bt_' using errcode = '22023';
  end if;
  return quantops.record_backtest(run_id, strategy, period_start, period_end, sharpe, sortino, max_drawdown, cagr,
                                  volatility, hit_rate, turnover, trades, metrics, model, model_version, null);
end
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops._record_run(text, text, timestamptz, timestamptz, double precision, double precision, double precision, double precision, double precision, double precision, double precision, integer, jsonb, text, integer)', 'authenticated');
