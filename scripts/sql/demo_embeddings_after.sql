\pset footer off
select active_embedder->>'version' as version, backlog, coverage, failures, throughput_1h from quantops.embedding_status;
\echo 'a backtest asks for signal 1 as it was known just before the migration, and as it is now:'
select 'before the migration' as as_of, embedder, embedder_version, valid_from, valid_to
  from quantops.embedding_asof(1, :'before')
union all
select 'now', embedder, embedder_version, valid_from, valid_to
  from quantops.embedding_asof(1, now());
