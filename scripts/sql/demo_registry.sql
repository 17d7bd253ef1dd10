-- The demo, part 4: the model registry. Two versions, their backtests, a gated promotion of the
-- better one, a refused promotion, a rollback, and the history. Runs as postgres.
\pset footer off
\echo
\echo '-- 9. Model registry: two versions, backtested, the better one promoted, rolled back -'
select quantops.create_model('momentum-ranker', description => 'ranks momentum signals for momentum_v2') as model_id;
select quantops.register_model_version('momentum-ranker', metrics => '{"auc": 0.58}') as version_1,
       quantops.register_model_version('momentum-ranker', metrics => '{"auc": 0.63}') as version_2;
\echo 'the flow uploads both artifacts through the Storage API (their rows in storage.objects):'
insert into storage.objects (bucket_id, name)
values ('model-artifacts', 'backtests/momentum-ranker/1/model.onnx'), ('model-artifacts', 'backtests/momentum-ranker/2/model.onnx')
on conflict do nothing;
select bucket_id, name from storage.objects where name like 'backtests/momentum-ranker/%' order by name;
\echo 'production needs sharpe >= 1, drawdown <= 25 %, 100 trades, a backtest from the last 30 days:'
select min_sharpe, max_drawdown, min_trades, max_backtest_age, require_artifact from jsonb_to_record(
  quantops.set_promotion_policy('momentum-ranker', 'production', min_sharpe => 1.0, max_drawdown => 0.25,
                                min_trades => 100, max_backtest_age => interval '30 days'))
  as p(min_sharpe float8, max_drawdown float8, min_trades int, max_backtest_age text, require_artifact bool);
\echo 'backtests: metrics computed by quantops.backtest_metrics() from each version''s daily returns, written by record_backtest():'
with series as (
  select v, array_agg(0.0006 * v + 0.009 * sin(g * 1.37 + v) + 0.004 * cos(g * 0.23) order by g) as r
  from generate_series(1, 2) v, generate_series(1, 252) g group by v
)
select (quantops.record_backtest('demo-momentum-ranker-v' || v, 'momentum_v2', '2025-01-01', '2025-12-31',
          sharpe => m.sharpe, sortino => m.sortino, max_drawdown => m.max_drawdown, cagr => m.cagr,
          volatility => m.volatility, hit_rate => m.hit_rate, trades => 180 + 20 * v,
          model => 'momentum-ranker', model_version => v)) ->> 'run_id' as recorded
from series, quantops.backtest_metrics(series.r) m order by v;
select rank, model_version as version, round(sharpe::numeric, 2) as sharpe, round(sortino::numeric, 2) as sortino,
       round(max_drawdown::numeric, 3) as max_dd, round(cagr::numeric, 3) as cagr, round(hit_rate::numeric, 2) as hit_rate, trades
from quantops.backtest_leaderboard where model_name = 'momentum-ranker' order by rank;
\echo 'production serves version 1 (compare-and-set: production points at nothing yet):'
select quantops.promote('momentum-ranker', 1, 'production', null, reason => 'first release') as promoted;
select pg_sleep(0.01);
\echo 'promote the leader to production (expected_current 1):'
select quantops.promote('momentum-ranker', (select model_version from quantops.backtest_leaderboard
                                              where model_name = 'momentum-ranker' order by rank limit 1),
                        'production', 1) as promoted;
\echo 'a second flow, still believing production is version 1, loses the compare-and-set (40001):'
\set ON_ERROR_STOP 0
select quantops.promote('momentum-ranker', 2, 'production', 1);
\echo 'a version whose backtest misses a gate is refused with every reason (23514):'
select quantops.set_promotion_policy('momentum-ranker', 'champion', min_sharpe => 5, min_trades => 1000) is not null as champion_policy;
select quantops.promote('momentum-ranker', 2, 'champion', null);
\set ON_ERROR_STOP 1
\echo 'roll production back to the version before (the same gates apply):'
select pg_sleep(0.01);
select quantops.rollback('momentum-ranker', 'production') as rolled_back;
select h.alias, h.version, h.reason, lower(h.valid)::time(2) as from_, coalesce(upper(h.valid)::time(2)::text, 'now') as to_
from quantops.alias_history h join quantops.models m on m.id = h.model_id where m.name = 'momentum-ranker' order by lower(h.valid);
select quantops.alias_asof('momentum-ranker', 'production', (select upper(valid) - interval '1 microsecond' from quantops.alias_history
        where reason = 'promote' and alias = 'production' order by lower(valid) desc limit 1)) as production_just_before_the_rollback;
\echo 'what agents discover (a user''s RPC under RLS), and the events waiting for flows:'
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', '{"sub": "11111111-1111-4111-8111-111111111111", "role": "authenticated"}', true) is not null as jwt_claims_set;
select kind, model, alias, version, artifact_bucket || '/' || artifact_prefix as artifact from quantops.discover();
commit;
select id, topic, payload ->> 'model' as model, payload ->> 'version' as version, payload ->> 'previous' as previous,
       payload ->> 'reason' as reason from quantops.outbox order by id;
