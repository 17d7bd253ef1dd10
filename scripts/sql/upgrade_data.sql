-- Data written through every capability of the previous release (0.1.0's SQL surface), before
-- ALTER EXTENSION quantops UPDATE. Run as the superuser of the upgrade check's cluster, in the
-- database where the worker runs. Deterministic apart from timestamps and generated ids.
\set ON_ERROR_STOP 1
set client_min_messages = warning;
select quantops.configure(dims => 8, lists => 2);
-- signals, embedded by a built-in embedder, then by a second version (history rows)
select quantops.register_embedder('up-features', 'features', 8,
  '{"features": ["momentum", "volatility"], "mean": [0.1, 0.3], "std": [0.2, 0.1], "seed": 7}', activate => true);
insert into quantops.signal_embeddings (strategy, symbol, as_of, features, series, rationale, tags, owner)
select (array['momentum_v1', 'carry_fx', 'retired_v0'])[1 + g % 3], (array['AAPL', 'MSFT', 'EURUSD', 'ES'])[1 + g % 4],
       timestamptz '2020-01-01 00:00+00' + g * interval '1 day',
       jsonb_build_object('momentum', (g % 17) / 17.0, 'volatility', 0.1 + (g % 5) / 10.0),
       array[(g % 7) / 100.0, -(g % 3) / 100.0]::float8[], format('signal %s', g), array['long'],
       (array['11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222'])[1 + g % 2]::uuid
  from generate_series(1, 600) g;
select done, remaining from quantops.refresh_embeddings();
select quantops.register_embedder('up-features', 'features', 8,
  '{"features": ["momentum", "volatility"], "mean": [0.1, 0.3], "std": [0.2, 0.1], "seed": 8}', activate => true);
select done, remaining from quantops.refresh_embeddings();
-- the archive: a retention policy retires a strategy, in batches
select quantops.set_retention('retire-v0', 'retired_strategy', strategy => 'retired_v0');
select quantops._prune_start(null);
select quantops.prune_batch(null, 50) from generate_series(1, 10);
-- the registry: models, versions, backtests, gated promotions, a rollback (alias history, outbox)
select quantops.set_artifact_check('off');
select quantops.create_model('up-model');
select quantops.register_model_version('up-model') from generate_series(1, 3);
select quantops.record_backtest('up-run-' || v, 'momentum_v1', '2024-01-01', '2025-01-01', sharpe => 1.0 + v / 10.0,
                                max_drawdown => 0.1, trades => 100, model => 'up-model', model_version => v)
  from generate_series(1, 3) v;
select quantops.set_promotion_policy('up-model', 'production', min_sharpe => 1.0, require_artifact => false);
select quantops.promote('up-model', 1, 'production', null);
select quantops.promote('up-model', 2, 'production', 1);
select quantops.promote('up-model', 3, 'production', 2);
select quantops.rollback('up-model', 'production');
select count(*) from quantops.consume_events('upgrade-check', 2);
-- flags, with a change and a kill (audited)
select quantops.set_flag('up.flag', '{"environments": {"production": true}, "rules": [{"constraints": [{"attribute": "desk", "op": "in", "values": ["rates"]}]}]}');
select quantops.set_flag('up.other', '{"environments": {"production": true}}');
select quantops.kill_flag('up.other');
-- the audit trail: tool calls and flow runs as start/finish pairs
select quantops.log_tool_call('search_memory', arguments => '{"q": "momentum"}', agent => 'planner');
select quantops.log_flow_run('scheduled-backtest-runner', run_id => ('aaaaaaaa-0000-4000-8000-00000000000' || g)::uuid,
                             parameters => '{"n": 1}') from generate_series(1, 3) g;
select quantops.log_flow_run('scheduled-backtest-runner', phase => 'finish', outcome => 'ok',
                             run_id => ('aaaaaaaa-0000-4000-8000-00000000000' || g)::uuid) from generate_series(1, 3) g;
select quantops.run_job('verify-audit') ->> 'status';
