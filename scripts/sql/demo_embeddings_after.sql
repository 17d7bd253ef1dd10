\pset footer off
select active_embedder->>'version' as version, backlog, coverage, failures, throughput_1h from quantops.embedding_status;
\echo 'a backtest asks for signal 1 as it was known before the migration (no look-ahead):'
select embedder, embedder_version, valid_from, valid_to
from quantops.embedding_asof(1, (select min(valid_to) from quantops.signal_embedding_history where signal_id = 1));
