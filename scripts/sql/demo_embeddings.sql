-- Part of the demo: a model migration and the backlog draining (run by scripts/demo.sh).
\pset footer off
\echo
\echo '-- 2b. Embedding refresh ---------------------------------------------------------'
\echo 'the seeded signals were embedded by the worker as they arrived:'
select active_embedder->>'name' as embedder, backlog, coverage, failures from quantops.embedding_status;
\echo 'an unrelated update (rationale) causes no work; a feature change does, once:'
update quantops.signal_embeddings set rationale = rationale || ' (reviewed)' where id <= 100;
select backlog as after_rationale_update from quantops.embedding_status;
update quantops.signal_embeddings set features = features || '{"momentum_12_1": 0.3}' where id = 1;
update quantops.signal_embeddings set features = features || '{"momentum_12_1": 0.31}' where id = 1;
select backlog as after_two_feature_updates_of_one_row from quantops.embedding_status;
\echo '30,000 more signals arrive from a backfill, then the model changes (a new embedder version):'
insert into quantops.signal_embeddings (strategy, symbol, as_of, features, owner)
select (array['momentum_v1','momentum_v2','mean_reversion','carry_fx','trend_futures'])[1 + g % 5],
       'BF' || (g % 300), timestamptz '2025-01-01' + g * interval '15 minutes',
       jsonb_build_object('momentum_12_1', (g % 97) / 200.0 - 0.2, 'volatility_20d', 0.1 + (g % 50) / 100.0,
                          'zscore_5d', (g % 41) / 10.0 - 2, 'volume_ratio', 0.5 + (g % 20) / 10.0, 'carry', (g % 9 - 4) / 100.0),
       '22222222-2222-4222-8222-222222222222'
from generate_series(1, 30000) g;
select quantops.set_embedder('signal-features', quantops.register_embedder('signal-features', 'features', 384,
  '{"features": ["momentum_12_1", "volatility_20d", "zscore_5d", "volume_ratio", "carry"],
    "mean": [0.1, 0.35, 0.0, 1.5, 0.0], "std": [0.2, 0.15, 1.2, 0.6, 0.025], "seed": 43}')) as migration;
