-- Synthetic research data: two analysts, five strategies, twelve symbols, 3,000 signals with
-- features, a 32-point return series and a rationale, plus backtests. Deterministic (setseed).
select setseed(0.4242);

insert into auth.users (id, email) values
  ('11111111-1111-4111-8111-111111111111', 'ada@quant.example'),
  ('22222222-2222-4222-8222-222222222222', 'grace@quant.example')
on conflict (id) do nothing;

insert into public.strategies (name, description, asset_class) values
  ('momentum_v1', '12-1 month cross-sectional momentum', 'equities'),
  ('momentum_v2', 'momentum with volatility scaling (behind a flag)', 'equities'),
  ('mean_reversion', 'short-horizon reversal on liquid names', 'equities'),
  ('carry_fx', 'G10 carry', 'fx'),
  ('trend_futures', 'time-series trend on futures', 'futures')
on conflict (name) do nothing;

with s as (
  select g,
         (array['momentum_v1','momentum_v2','mean_reversion','carry_fx','trend_futures'])[1 + g % 5] as strategy,
         (array['AAPL','MSFT','NVDA','AMZN','GOOGL','META','JPM','XOM','EURUSD','USDJPY','ES','CL'])[1 + (g / 5) % 12] as symbol,
         (array['11111111-1111-4111-8111-111111111111','22222222-2222-4222-8222-222222222222'])[1 + g % 2]::uuid as owner
  from generate_series(0, 2999) g
)
insert into quantops.signal_embeddings (strategy, symbol, as_of, features, series, rationale, tags, owner)
select strategy, symbol,
       timestamptz '2026-01-02 21:00+00' + ((s.g / 60) * interval '1 day') + (s.g % 60) * interval '1 minute',
       jsonb_build_object(
         'momentum_12_1', round((random() * 0.6 - 0.2)::numeric, 4),
         'volatility_20d', round((0.1 + random() * 0.5)::numeric, 4),
         'zscore_5d', round((random() * 4 - 2)::numeric, 4),
         'volume_ratio', round((0.5 + random() * 2)::numeric, 4),
         'carry', round((random() * 0.08 - 0.04)::numeric, 4)),
       (select array_agg(round((random() * 0.04 - 0.02)::numeric, 5)::float8) from generate_series(1, 32 + 0 * s.g)),
       format('%s signal on %s: %s', strategy, symbol,
              (array['breakout above 50d high','reversal after earnings gap','carry widening','trend persistence','volume surge'])[1 + (s.g * 7) % 5]),
       array[strategy, (array['long','short'])[1 + (s.g * 3) % 2]],
       owner
from s
on conflict on constraint signal_embeddings_natural_key do nothing;

-- Backtests are the promotion gates' evidence: written only through quantops.record_backtest()
-- (idempotent by run id), here on behalf of the first analyst (the JWT claim PostgREST would set).
select set_config('request.jwt.claims', '{"sub": "11111111-1111-4111-8111-111111111111", "role": "service_role"}', false);
select count(quantops.record_backtest(
         format('seed-%s-%s', strategy, y), strategy,
         make_timestamptz(y, 1, 1, 0, 0, 0, 'UTC'), make_timestamptz(y, 12, 31, 0, 0, 0, 'UTC'),
         sharpe => round((0.3 + random() * 1.7)::numeric, 3), sortino => round((0.5 + random() * 2.0)::numeric, 3),
         max_drawdown => round((0.05 + random() * 0.25)::numeric, 3), cagr => round((random() * 0.3 - 0.05)::numeric, 3),
         volatility => round((0.08 + random() * 0.2)::numeric, 3), hit_rate => round((0.45 + random() * 0.15)::numeric, 3),
         turnover => round((1 + random() * 20)::numeric, 2), trades => (100 + random() * 900)::int,
         metrics => jsonb_build_object('calmar', round((random() * 3)::numeric, 2)),
         artifact_path => format('backtests/%s/%s/report.json', strategy, y)))
from unnest(array['momentum_v1','momentum_v2','mean_reversion','carry_fx','trend_futures']) strategy,
     generate_series(2021, 2025) y;
select set_config('request.jwt.claims', '', false);
