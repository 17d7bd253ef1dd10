-- The data model: constraints reject nonsense; configure() fixes the dimension.
begin;
set local client_min_messages = warning;
\set VERBOSITY terse
select embedding_dims, index_metric from quantops.settings;
select format_type(atttypid, atttypmod) like '%vector(384)' as typed
  from pg_attribute where attrelid = 'quantops.signal_embeddings'::regclass and attname = 'embedding';
select am.amname, o.opcname
  from pg_index i join pg_class c on c.oid = i.indexrelid join pg_am am on am.oid = c.relam
  join pg_opclass o on o.oid = i.indclass[0]
  where i.indrelid = 'quantops.signal_embeddings'::regclass and am.amname = 'ivfflat';
savepoint s;
insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder)
  values ('regress', 'AAPL', '2026-01-02', '[1,2,3]', 'x');
rollback to s;
insert into quantops.signal_embeddings (strategy, symbol, as_of, series)
  values ('regress', 'AAPL', '2026-01-02', '{0.1, Infinity}');
rollback to s;
insert into quantops.signal_embeddings (strategy, symbol, as_of, series)
  values ('regress', 'AAPL', '2026-01-02', '{0.1, NULL}');
rollback to s;
insert into quantops.signal_embeddings (strategy, symbol, as_of, series)
  values ('regress', 'AAPL', '2026-01-02', '{{1,2},{3,4}}');
rollback to s;
insert into quantops.signal_embeddings (strategy, symbol, as_of)
  values ('', 'AAPL', '2026-01-02');
rollback to s;
-- backtests go in through record_backtest only (the gates' evidence), which checks them first
select quantops.record_backtest('regress-1', 'regress', '2026-01-02', '2026-01-01', sharpe => 1.0);
rollback to s;
select quantops.record_backtest('regress-1', 'regress', '2025-01-01', '2026-01-01', sortino => 'Infinity');
rollback to s;
-- good rows go in, and a duplicate natural key is refused
insert into quantops.signal_embeddings (strategy, symbol, as_of, features, series, tags)
  values ('regress', 'AAPL', '2026-01-02', '{"momentum_12_1": 0.12}', '{0.01, -0.02, 0.03}', '{long}');
insert into quantops.signal_embeddings (strategy, symbol, as_of)
  values ('regress', 'AAPL', '2026-01-02');
rollback to s;
select r ->> 'run_id' as run_id, r ->> 'sharpe' as sharpe, r ->> 'max_drawdown' as max_drawdown, r ->> 'trades' as trades
  from quantops.record_backtest('regress-2', 'regress', '2025-01-01', '2026-01-01', sharpe => 1.4, max_drawdown => 0.12, trades => 240) r;
-- configure refuses bad input with 22023 and leaves the settings alone
select quantops.configure(dims => 0);
rollback to s;
select quantops.configure(dims => 384, metric => 'hamming');
rollback to s;
select embedding_dims, index_metric from quantops.settings;
rollback;
