-- The embedding refresh that replaces the `supabase-embedding-refresh` flow: a built-in features
-- embedder over the signal features, computed inside Postgres. Every signal written from now on is
-- embedded by the quantops worker within moments; `quantops.embedding_status` shows the backlog.
select quantops.register_embedder(
  name     => 'signal-features',
  kind     => 'features',
  dims     => 384,
  params   => '{"features": ["momentum_12_1", "volatility_20d", "zscore_5d", "volume_ratio", "carry"],
                "mean": [0.1, 0.35, 0.0, 1.5, 0.0],
                "std": [0.173, 0.144, 1.155, 0.577, 0.023],
                "seed": 42}',
  activate => true);

-- Hourly sweep for rows a trigger missed, and a refresh from pg_cron as a belt to the worker's braces.
select cron.schedule('quantops-sweep-embeddings', '41 * * * *', $$select quantops.run_job('sweep-embeddings')$$);
