-- The demo, part 6: the backtest runner. Ten years of daily bars for five symbols (seeded GBM,
-- shared market data), a parameter sweep of the moving-average crossover in parallel inside
-- PostgreSQL, and the best pair's backtest feeding a gated promotion. Runs as postgres.
\pset footer off
\echo
\echo '-- 11. Backtests: bars, a 190-pair sweep on five symbols, the best one through the gates -'
-- seeded GBM closes (20 % volatility, 8 % drift a year), opens near the previous close
with draws as (
    select s, g, sqrt(-2 * ln((hashtext('u' || s || ':' || g)::int8 + 2147483649) / 4294967298.0))
                 * cos(2 * pi() * (hashtext('v' || s || ':' || g)::int8 + 2147483648) / 4294967296.0) as z
    from generate_series(1, 5) s, generate_series(1, 2520) g),
  closes as (
    select s, g, 100 * exp(sum(0.2 / sqrt(252) * z + (0.08 - 0.02) / 252) over (partition by s order by g)) as c
    from draws)
insert into quantops.bars (symbol, ts, open, high, low, close, volume)
select 'DEMO' || s, timestamptz '2015-01-01' + (g - 1) * interval '1 day', o, greatest(o, c) * 1.003, least(o, c) * 0.997, c, 1e6
from (select s, g, c, coalesce(lag(c) over (partition by s order by g), c) * (1 + 0.001 * sin(g)) as o from closes) x
on conflict do nothing;
select symbol, count(*) as bars, min(ts)::date as first, max(ts)::date as last, round(min(close)::numeric, 2) as min_close,
       round(max(close)::numeric, 2) as max_close
from quantops.bars where symbol like 'DEMO%' group by symbol order by symbol;
\echo 'every fast/slow pair of 5..100 step 5 (190), on each symbol, fills at the next open, 0.1 % fees, 0.05 % slippage;'
\echo 'the three best a symbol by Sharpe, recorded through record_backtest:'
\timing on
select symbol, rank, params ->> 'fast' as fast, params ->> 'slow' as slow, round(sharpe::numeric, 2) as sharpe,
       round(max_drawdown::numeric, 3) as max_dd, round(total_return::numeric, 3) as total_return, trades,
       round(fees_paid::numeric, 2) as fees
from quantops.run_backtest_grid('ma_cross', array['DEMO1', 'DEMO2', 'DEMO3', 'DEMO4', 'DEMO5'],
       '{"fast": {"from": 5, "to": 100, "step": 5}, "slow": {"from": 5, "to": 100, "step": 5}}',
       '{"fees": 0.001, "slippage": 0.0005}', top_n => 3)
order by symbol, rank;
\timing off
\echo 'the best pair across the symbols becomes a model version, its backtest linked to it, and is promoted through the gates:'
select quantops.create_model('ma-crossover', description => 'moving-average crossover, parameters from the sweep') is not null as model_created;
select quantops.register_model_version('ma-crossover', metrics => b.params || jsonb_build_object('symbol', b.symbol)) as version
from (select r.metrics -> 'params' as params, r.metrics -> 'symbols' ->> 0 as symbol
        from quantops.backtest_results r where r.strategy like 'ma_cross:DEMO%' order by r.sharpe desc nulls last limit 1) b;
insert into storage.objects (bucket_id, name) values ('model-artifacts', 'backtests/ma-crossover/1/params.json') on conflict do nothing;
select min_sharpe, max_drawdown, min_trades from jsonb_to_record(
  quantops.set_promotion_policy('ma-crossover', 'production', min_sharpe => 0.3, max_drawdown => 0.5, min_trades => 5))
  as p(min_sharpe float8, max_drawdown float8, min_trades int);
select run_id, round(sharpe::numeric, 2) as sharpe, round(max_drawdown::numeric, 3) as max_dd, trades, model_name, model_version
from quantops.run_backtest('ma_cross', array[(select metrics ->> 'symbol' from quantops.model_versions v join quantops.models m on m.id = v.model_id where m.name = 'ma-crossover' and v.version = 1)],
       (select metrics - 'symbol' from quantops.model_versions v join quantops.models m on m.id = v.model_id where m.name = 'ma-crossover' and v.version = 1),
       '{"fees": 0.001, "slippage": 0.0005}', model => 'ma-crossover', model_version => 1);
select quantops.promote('ma-crossover', 1, 'production', null, reason => 'best of the sweep') as promoted;
\echo 'the same pair with same-bar fills must be asked for explicitly (22023), and is then recorded as such:'
\set ON_ERROR_STOP 0
select quantops.run_backtest('ma_cross', array['DEMO1'], '{"fast": 10, "slow": 50}', '{"execution": "same_close"}');
\set ON_ERROR_STOP 1
select metrics -> 'options' ->> 'execution' as execution, metrics -> 'options' ->> 'allow_same_bar' as allow_same_bar,
       round(sharpe::numeric, 2) as sharpe
from quantops.run_backtest('ma_cross', array['DEMO1'], '{"fast": 10, "slow": 50}', '{"execution": "same_close", "allow_same_bar": true}');
