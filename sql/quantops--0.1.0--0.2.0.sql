\echo Use "ALTER EXTENSION quantops UPDATE" to load this file. \quit
-- quantops 0.1.0 -> 0.2.0. Every change to the SQL surface after 0.1.0 goes here (CHANGELOG.md);
-- scripts/upgrade_check.sh proves that an upgraded installation equals a fresh one.

-- Read replicas: every function that writes refuses on a hot standby with 25006 and a hint, first.
create function quantops._require_primary(fn text) returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if pg_catalog.pg_is_in_recovery() then
    raise exception 'cannot run quantops.%() on a read replica', fn using errcode = '25006',
      detail = 'this server is a hot standby in recovery: quantops.' || fn || '() writes',
      hint = 'call it on the primary; a replica serves quantops'' reads (docs/replicas.md)';
  end if;
end
$$;
revoke execute on function quantops._require_primary(text) from public;

-- Grants are declared next to each routine (0.2.0): one row of quantops.routine_grants per routine
-- granted to an API role; grant_roles() grants from it.
create table quantops.routine_grants (
  routine text primary key,   -- 'quantops.name(argument types)'; @vector@ is pgvector's type, qualified
  tier    text not null check (tier in ('anon', 'authenticated', 'service_role', 'postgres'))
);
alter table quantops.routine_grants enable row level security;
create policy readable on quantops.routine_grants for select using (true);
insert into quantops.routine_grants (routine, tier) values
  ('quantops.uid()', 'anon'),
  ('quantops._caller_role()', 'service_role'),
  ('quantops._require_primary(text)', 'service_role'),
  ('quantops._finite_array(double precision[])', 'authenticated'),
  ('quantops._finite(double precision)', 'authenticated'),
  ('quantops._audit_payload(quantops.audit_log)', 'service_role'),
  ('quantops.embedding_asof(bigint, timestamptz)', 'authenticated'),
  ('quantops.match_signals(@vector@, integer, jsonb, timestamptz)', 'authenticated'),
  ('quantops._text_list(jsonb, text)', 'authenticated'),
  ('quantops.set_retention(text, text, text, interval, integer, boolean)', 'service_role'),
  ('quantops.drop_retention(text)', 'service_role'),
  ('quantops._prune_start(text)', 'service_role'),
  ('quantops.prune_batch(text, integer)', 'service_role'),
  ('quantops.prune_plan(text)', 'service_role'),
  ('quantops.restore_archived(bigint[], text, integer)', 'service_role'),
  ('quantops._prune_record(bigint, bigint, jsonb)', 'service_role'),
  ('quantops._prune_health()', 'service_role'),
  ('quantops.prune(boolean, integer, bigint, text, jsonb)', 'service_role'),
  ('quantops.create_model(text, text, text)', 'service_role'),
  ('quantops.register_model_version(text, text, text, jsonb, text, text)', 'service_role'),
  ('quantops.promote(text, integer, text, integer, text)', 'service_role'),
  ('quantops.rollback(text, text)', 'service_role'),
  ('quantops.alias_asof(text, text, timestamptz)', 'authenticated'),
  ('quantops.set_promotion_policy(text, text, double precision, double precision, integer, interval, double precision, double precision, boolean)', 'service_role'),
  ('quantops.set_artifact_check(text)', 'postgres'),
  ('quantops.artifacts_to_delete(interval)', 'service_role'),
  ('quantops.consume_events(text, integer, integer)', 'service_role'),
  ('quantops.ack_event(bigint, text)', 'service_role'),
  ('quantops.record_backtest(text, text, timestamptz, timestamptz, double precision, double precision, double precision, double precision, double precision, double precision, double precision, integer, jsonb, text, integer, text)', 'service_role'),
  ('quantops.discover(text, text)', 'authenticated'),
  ('quantops.set_flag(text, jsonb)', 'service_role'),
  ('quantops.kill_flag(text, boolean)', 'service_role'),
  ('quantops.drop_flag(text)', 'service_role'),
  ('quantops.flag_enabled(text, jsonb)', 'anon'),
  ('quantops.redact_secrets(jsonb)', 'authenticated'),
  ('quantops.log_tool_call(text, text, uuid, jsonb, text, jsonb, text)', 'authenticated'),
  ('quantops.log_flow_run(text, text, uuid, jsonb, text, jsonb)', 'service_role'),
  ('quantops.verify_audit(text)', 'service_role'),
  ('quantops.backtest_metrics(double precision[], integer, double precision)', 'authenticated'),
  ('quantops.register_embedder(text, text, integer, jsonb, boolean)', 'service_role'),
  ('quantops.set_embedder(text, integer)', 'service_role'),
  ('quantops.embedding_input_hash(text, integer, text, text, jsonb, double precision[], text, text[])', 'service_role'),
  ('quantops.refresh_embeddings(bigint, bigint, bigint)', 'service_role'),
  ('quantops.sweep_embeddings()', 'service_role'),
  ('quantops.retry_failed(text, text)', 'service_role'),
  ('quantops.evaluate_flag(text, jsonb)', 'anon'),
  ('quantops.require_flag(text, jsonb)', 'anon'),
  ('quantops.configure(integer, integer, text)', 'postgres'),
  ('quantops._index_health(oid, boolean, integer, integer, double precision, integer)', 'service_role'),
  ('quantops._maintain_index(oid, boolean, boolean)', 'service_role'),
  ('quantops.index_health(regclass, boolean, integer, integer, double precision, integer)', 'service_role'),
  ('quantops.maintain_index(regclass, boolean, boolean)', 'service_role'),
  ('quantops.run_job(text)', 'service_role'),
  ('quantops.status()', 'service_role'),
  ('quantops.version()', 'anon');

-- What the worker's HTTP path is doing now (requests in flight, their limit, the last rate-limit
-- wait), read from shared memory, and three columns of quantops.embedding_status that show it.
create function quantops._embedding_http_state()
returns table (requests_in_flight integer, concurrency integer, last_rate_limit_wait_ms bigint)
strict volatile parallel safe
set search_path to pg_catalog, pg_temp
language c
as 'MODULE_PATHNAME', 'embedding_http_state_wrapper';
revoke execute on function quantops._embedding_http_state() from public;
insert into quantops.routine_grants (routine, tier) values ('quantops._embedding_http_state()', 'service_role');
-- The backlog at a glance. security_invoker: what the caller may read is what it sees.
create or replace view quantops.embedding_status with (security_invoker = true) as
select
  (select pg_catalog.jsonb_build_object('name', e.name, 'version', e.version, 'kind', e.kind, 'dims', e.dims)
     from quantops.embedders e where e.active) as active_embedder,
  (select count(*) from quantops.embedding_queue) as backlog,
  (select count(*) from quantops.embedding_queue q
     where q.next_try_at <= pg_catalog.now() and (q.lease_until is null or q.lease_until < pg_catalog.now())) as ready,
  (select count(*) from quantops.embedding_queue q where q.lease_until >= pg_catalog.now()) as in_flight,
  (select count(*) from quantops.embedding_queue q where q.next_try_at > pg_catalog.now()) as backing_off,
  (select pg_catalog.round(extract(epoch from pg_catalog.now() - min(q.enqueued_at))::numeric, 1)
     from quantops.embedding_queue q) as oldest_stale_age_s,
  (select coalesce(pg_catalog.jsonb_object_agg(c.k, c.n), '{}'::jsonb) from (
     select coalesce(s.embedder || '@' || s.embedder_version, 'none') k, count(*) n
       from quantops.signal_embeddings s group by 1) c) as coverage,
  (select coalesce(pg_catalog.jsonb_object_agg(f.error_class, f.n), '{}'::jsonb) from (
     select error_class, count(*) n from quantops.embedding_failures group by 1) f) as failures,
  (select coalesce(pg_catalog.jsonb_object_agg(q.last_error_class, q.n), '{}'::jsonb) from (
     select last_error_class, count(*) n from quantops.embedding_queue where last_error_class is not null group by 1) q) as retrying,
  (select pg_catalog.jsonb_build_object(
       'runs', count(*), 'rows', coalesce(sum(r.rows), 0),
       'rows_per_s', pg_catalog.round((coalesce(sum(r.rows), 0) / greatest(sum(extract(epoch from r.finished_at - r.started_at)), 0.001))::numeric, 1),
       'last_run_at', max(r.finished_at))
     from quantops.job_runs r
    where r.job = 'refresh-embeddings' and r.status = 'succeeded' and r.finished_at > pg_catalog.now() - interval '1 hour') as throughput_1h,
  h.requests_in_flight,
  h.concurrency,
  h.last_rate_limit_wait_ms
from quantops._embedding_http_state() h;
comment on view quantops.embedding_status is
  'embedding backlog (exact), its age, coverage per embedder version, failures by class, recent throughput; the worker''s HTTP requests in flight, their current limit and the last rate-limit wait';

-- The flag benchmark left the SQL surface (examples/flag_bench.rs).
drop function quantops._flag_bench_rust(bigint);

-- quantops.version(): the library's version.
create function quantops.version() returns text
strict stable parallel safe
set search_path to pg_catalog, pg_temp
language c
as 'MODULE_PATHNAME', 'version_wrapper';
revoke execute on function quantops.version() from public;

-- The worker's lease takes rows that failed before in next_try_at order, from an index of their own.
create index embedding_queue_retry_idx on quantops.embedding_queue (next_try_at, signal_id) where last_error_class is not null;
-- ... and rewrites its leased rows in place (HOT, no index entries): half of each page left free.
-- Pages written from now on; the queue drains and refills, so it soon holds none of the old.
alter table quantops.embedding_queue set (fillfactor = 50);

-- The local sentence model (embedder kind model) and embed_text().
alter table quantops.embedders drop constraint embedders_kind_check,
  add constraint embedders_kind_check check (kind in ('features', 'series', 'hashing', 'http', 'model'));
create function quantops._embed_text("input" text) returns real[]
strict stable parallel restricted security definer
set search_path to pg_catalog, pg_temp
language c
as 'MODULE_PATHNAME', 'embed_text_real_wrapper';
revoke execute on function quantops._embed_text(text) from public;
insert into quantops.routine_grants (routine, tier) values ('quantops._embed_text(text)', 'authenticated');
-- the vector form: pgvector's assignment cast from real[] (found by type, not by name)
create function quantops.embed_text(input text) returns vector
language plpgsql stable strict parallel restricted
set search_path = pg_catalog, pg_temp
as $$
begin
  return quantops._embed_text(input);
end
$$;
revoke execute on function quantops.embed_text(text) from public;
insert into quantops.routine_grants (routine, tier) values ('quantops.embed_text(text)', 'authenticated');
comment on function quantops.embed_text(text) is
  'the active local model''s vector of a text (Supabase RPC; e.g. match_signals(quantops.embed_text(''...''))), computed by the quantops embedder worker';

-- Backtests (0.2.0): market data with point-in-time semantics, stored target weights, the
-- engine's runner (run_backtest, run_backtest_grid) and the scheduled-backtest-runner's schedules.
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
revoke execute on function quantops._record_run(text, text, timestamptz, timestamptz, double precision, double precision, double precision, double precision, double precision, double precision, double precision, integer, jsonb, text, integer) from public;

create function quantops._run_backtest(
	"strategy" TEXT,
	"symbols" TEXT[],
	"params" jsonb,
	"options" jsonb,
	"period_start" timestamp with time zone,
	"period_end" timestamp with time zone,
	"model" TEXT,
	"model_version" INT
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_run_backtest_wrapper';
revoke execute on function quantops._run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer) from public;
insert into quantops.routine_grants (routine, tier) values ('quantops._run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer)', 'authenticated');
-- The recorded row, typed. Runs as the caller (its RLS decides which bars it reads).
create function quantops.run_backtest(strategy text, symbols text[], params jsonb default '{}'::jsonb,
                                      options jsonb default '{}'::jsonb, period_start timestamptz default null,
                                      period_end timestamptz default null, model text default null,
                                      model_version integer default null)
returns quantops.backtest_results
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select * from pg_catalog.jsonb_populate_record(null::quantops.backtest_results,
    quantops._run_backtest(strategy, symbols, params, options, period_start, period_end, model, model_version))
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer)', 'authenticated');
comment on function quantops.run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer) is
  'runs a strategy (ma_cross, breakout, target_weights) over quantops.bars point in time and records it through record_backtest; its run id hashes every input and the data read';
revoke execute on function quantops.run_backtest(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer) from public;

create function quantops.run_backtest_grid(
	"strategy" TEXT,
	"symbols" TEXT[],
	"grid" jsonb,
	"options" jsonb DEFAULT '{}'::jsonb,
	"period_start" timestamp with time zone DEFAULT null,
	"period_end" timestamp with time zone DEFAULT null,
	"keep" TEXT DEFAULT 'top',
	"top_n" INT DEFAULT 10,
	"rank_by" TEXT DEFAULT 'sharpe'
) RETURNS TABLE (
	"symbol" TEXT,
	"params" jsonb,
	"rank" INT,
	"run_id" TEXT,
	"recorded" bool,
	"sharpe" double precision,
	"sortino" double precision,
	"max_drawdown" double precision,
	"cagr" double precision,
	"total_return" double precision,
	"trades" INT,
	"fees_paid" double precision
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'run_backtest_grid_wrapper';
revoke execute on function quantops.run_backtest_grid(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer, text) from public;
insert into quantops.routine_grants (routine, tier) values ('quantops.run_backtest_grid(text, text[], jsonb, jsonb, timestamptz, timestamptz, text, integer, text)', 'authenticated');

create or replace function quantops.grant_roles() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  g record;
  r text;
  -- pgvector's type, qualified (it lives in extensions on Supabase, public elsewhere)
  v_vector text := (select pg_catalog.format('%I.vector', n.nspname) from pg_catalog.pg_extension e
                      join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector');
begin
  execute 'grant usage on schema quantops to public';
  for g in select x.routine as fn, x.tier from quantops.routine_grants x order by x.routine
  loop
    foreach r in array case g.tier
        when 'anon' then array['anon', 'authenticated', 'service_role', 'postgres']
        when 'authenticated' then array['authenticated', 'service_role', 'postgres']
        when 'service_role' then array['service_role', 'postgres']
        else array['postgres'] end
    loop
      continue when not exists (select 1 from pg_catalog.pg_roles x where x.rolname = r);
      execute pg_catalog.format('grant execute on routine %s to %I', pg_catalog.replace(g.fn, '@vector@', v_vector), r);
    end loop;
  end loop;
  -- tables: privileges decide which roles reach a table, RLS policies which rows.
  -- Signals: every column but id (no OVERRIDING SYSTEM VALUE: an id chosen by a caller could
  -- collide with an archived row and stop the prune and restores for everyone). Backtests are
  -- the gates' evidence: written only through record_backtest(), never directly.
  foreach r in array array['authenticated', 'service_role', 'postgres'] loop
    continue when not exists (select 1 from pg_catalog.pg_roles x where x.rolname = r);
    execute pg_catalog.format('grant select, delete, '
      'insert (strategy, symbol, as_of, features, series, rationale, tags, owner, embedding, embedder, embedder_version, '
      'input_hash, embedded_at, created_at, updated_at), '
      'update (strategy, symbol, as_of, features, series, rationale, tags, owner, embedding, embedder, embedder_version, '
      'input_hash, embedded_at, created_at, updated_at) on quantops.signal_embeddings to %I', r);
    execute pg_catalog.format('grant select on quantops.signal_embeddings_archive, quantops.backtest_results, quantops.audit_log, '
      'quantops.settings, quantops.signal_embedding_history, quantops.models, quantops.model_versions, quantops.model_aliases, '
      'quantops.alias_history, quantops.backtest_leaderboard to %I', r);
    -- market data and target weights: a user writes its own rows (RLS), reads those and the shared
    execute pg_catalog.format('grant select, insert, update, delete on quantops.bars, quantops.target_weights to %I', r);
  end loop;
  foreach r in array array['service_role', 'postgres'] loop
    continue when not exists (select 1 from pg_catalog.pg_roles x where x.rolname = r);
    -- a job may be paused or rescheduled (never renamed); the rebuild thresholds tuned
    execute pg_catalog.format('grant select, update (enabled, run_every, next_run_at) on quantops.jobs to %I', r);
    execute pg_catalog.format('grant select, update on quantops.index_policy to %I', r);
    -- an alias may be written directly: created, or moved to another version, and still through
    -- the gates (a constraint trigger); never renamed or given to another model
    execute pg_catalog.format('grant insert (model_id, alias, version), update (version) on quantops.model_aliases to %I', r);
    -- the scheduled backtests (over shared bars, recorded shared, never linked to a model)
    execute pg_catalog.format('grant select, insert, update, delete on quantops.backtest_schedules to %I', r);
    execute pg_catalog.format('grant select on quantops.job_runs, quantops.workers, quantops.audit_log, '
      'quantops.audit_heads, quantops.settings, quantops.embedders, quantops.embedding_queue, '
      'quantops.embedding_failures, quantops.signal_embedding_history, quantops.embedding_status, '
      'quantops.retention_policies, quantops.prune_state, quantops.index_builds, quantops.index_health_log, '
      'quantops.models, quantops.model_versions, quantops.alias_history, quantops.promotion_policies, '
      'quantops.outbox, quantops.backtest_leaderboard, quantops.flags, quantops.flag_exposures, '
      'quantops.routine_grants to %I', r);
  end loop;
end
$$;
select quantops.grant_roles();

create or replace function quantops.set_flag(key text, definition jsonb) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  r quantops.flags;
begin
  perform quantops._require_primary('set_flag');
  if key is null or definition is null then
    raise exception 'key and definition must not be null' using errcode = '22004';
  end if;
  if key !~ '^[a-z][a-z0-9_.:-]{0,127}$' then
    raise exception 'invalid flag key "%"', key using errcode = '22023',
      detail = 'a key is 1 to 128 characters: a lower-case letter, then lower-case letters, digits, ".", ":", "_" or "-"';
  end if;
  insert into quantops.flags as f (key, definition) values (set_flag.key, set_flag.definition)
  on conflict on constraint flags_pkey do update set definition = excluded.definition
  returning * into r;
  return pg_catalog.to_jsonb(r);
end
$$;

create or replace function quantops.kill_flag(key text, killed boolean default true) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  r quantops.flags;
begin
  perform quantops._require_primary('kill_flag');
  if key is null or killed is null then
    raise exception 'key and killed must not be null' using errcode = '22004';
  end if;
  update quantops.flags f set definition = pg_catalog.jsonb_set(f.definition, '{kill_switch}', pg_catalog.to_jsonb(killed))
   where f.key = kill_flag.key returning * into r;
  if not found then
    raise exception 'flag "%" does not exist', key using errcode = '42704';
  end if;
  return pg_catalog.to_jsonb(r);
end
$$;

create or replace function quantops.drop_flag(key text) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform quantops._require_primary('drop_flag');
  delete from quantops.flags f where f.key = drop_flag.key;
  if not found then
    raise exception 'flag "%" does not exist', key using errcode = '42704';
  end if;
  return true;
end
$$;

create or replace function quantops.set_retention(name text, kind text, strategy text default null,
                                       max_age interval default null, keep_newest integer default null,
                                       enabled boolean default true)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  r quantops.retention_policies;
begin
  perform quantops._require_primary('set_retention');
  if name is null or kind is null or enabled is null then
    raise exception 'name, kind and enabled must not be null' using errcode = '22004';
  end if;
  if name !~ '^[a-z][a-z0-9_-]{0,62}$' then
    raise exception 'invalid retention policy name "%"', name using errcode = '22023',
      detail = 'a name is 1 to 63 characters: a lower-case letter, then lower-case letters, digits, "_" or "-"';
  end if;
  if kind not in ('max_age', 'keep_newest', 'retired_strategy') then
    raise exception 'unknown retention kind "%"', kind using errcode = '22023',
      hint = 'kind is one of max_age, keep_newest, retired_strategy';
  end if;
  if kind = 'max_age' and (max_age is null or max_age <= interval '0') then
    raise exception 'max_age must be a positive interval, not %', coalesce(max_age::text, 'null') using errcode = '22023';
  end if;
  if kind <> 'max_age' and max_age is not null then
    raise exception 'max_age applies only to kind max_age' using errcode = '22023';
  end if;
  if kind = 'keep_newest' and (keep_newest is null or keep_newest < 0) then
    raise exception 'keep_newest must be zero or more, not %', coalesce(keep_newest::text, 'null') using errcode = '22023';
  end if;
  if kind <> 'keep_newest' and keep_newest is not null then
    raise exception 'keep_newest applies only to kind keep_newest' using errcode = '22023';
  end if;
  if kind = 'retired_strategy' and strategy is null then
    raise exception 'a retired_strategy policy needs a strategy' using errcode = '22023';
  end if;
  if strategy is not null
     and not exists (select 1 from quantops.signal_embeddings s where s.strategy = set_retention.strategy)
     and not exists (select 1 from quantops.signal_embeddings_archive a where a.strategy = set_retention.strategy) then
    raise exception 'strategy "%" does not exist', strategy using errcode = '42704',
      detail = 'no signal, live or archived, belongs to it';
  end if;
  insert into quantops.retention_policies as p (name, kind, strategy, max_age, keep_newest, enabled)
    values (set_retention.name, set_retention.kind, set_retention.strategy, set_retention.max_age,
            set_retention.keep_newest, set_retention.enabled)
  on conflict on constraint retention_policies_name_key do update
    set kind = excluded.kind, strategy = excluded.strategy, max_age = excluded.max_age,
        keep_newest = excluded.keep_newest, enabled = excluded.enabled,
        updated_at = pg_catalog.now(), updated_by = quantops._caller_role()
  returning * into r;
  -- a changed policy starts a fresh run: the old watermark belonged to the old rule
  delete from quantops.prune_state s where s.policy_id = r.id;
  return pg_catalog.to_jsonb(r);
end
$$;

create or replace function quantops.drop_retention(name text) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform quantops._require_primary('drop_retention');
  if name is null then
    raise exception 'name must not be null' using errcode = '22004';
  end if;
  delete from quantops.retention_policies p where p.name = drop_retention.name;
  if not found then
    raise exception 'retention policy "%" does not exist', name using errcode = '42704';
  end if;
  return true;
end
$$;

create or replace function quantops._prune_start(policy text default null) returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  n integer;
begin
  perform quantops._require_primary('_prune_start');
  if policy is not null and not exists (select 1 from quantops.retention_policies p where p.name = policy) then
    raise exception 'retention policy "%" does not exist', policy using errcode = '42704';
  end if;
  insert into quantops.prune_state as s (policy_id, cutoff)
    select p.id, case when p.kind = 'max_age' then pg_catalog.now() - p.max_age end
      from quantops.retention_policies p
     where p.enabled and (_prune_start.policy is null or p.name = _prune_start.policy)
  on conflict (policy_id) do update
    set cutoff = excluded.cutoff, wm_as_of = '-infinity', wm_id = 0, moved = 0, batches = 0,
        started_at = pg_catalog.clock_timestamp(), finished_at = null
    where s.finished_at is not null;
  select count(*) into n
    from quantops.prune_state s join quantops.retention_policies p on p.id = s.policy_id
   where s.finished_at is null and p.enabled and (_prune_start.policy is null or p.name = _prune_start.policy);
  return n;
end
$$;

create or replace function quantops.prune_batch(policy text default null, batch_size integer default 1000)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  p        quantops.retention_policies;
  st       quantops.prune_state;
  v_moved  bigint;
  v_as_of  timestamptz;
  v_id     bigint;
begin
  perform quantops._require_primary('prune_batch');
  if batch_size is null or batch_size < 1 or batch_size > 100000 then
    raise exception 'batch_size must be between 1 and 100000, not %', coalesce(batch_size::text, 'null')
      using errcode = '22023';
  end if;
  if policy is not null and not exists (select 1 from quantops.retention_policies r where r.name = policy) then
    raise exception 'retention policy "%" does not exist', policy using errcode = '42704';
  end if;
  for p in
    select r.* from quantops.prune_state s join quantops.retention_policies r on r.id = s.policy_id
     where s.finished_at is null and r.enabled and (prune_batch.policy is null or r.name = prune_batch.policy)
     order by r.id
  loop
    -- one mover per run at a time; a second one goes on to the next run instead of waiting
    perform 1 from quantops.prune_state s where s.policy_id = p.id and s.finished_at is null
      for update skip locked;
    continue when not found;
    select * into st from quantops.prune_state s where s.policy_id = p.id;
    with picked as (
      select quantops._prune_pick(p, st, batch_size) as id
    ), moved as (
      delete from quantops.signal_embeddings s using picked where s.id = picked.id
      returning s.*
    ), archived as (
      insert into quantops.signal_embeddings_archive
        (id, strategy, symbol, as_of, features, series, rationale, tags, owner, embedding, embedder,
         embedder_version, input_hash, embedded_at, created_at, updated_at, archive_reason)
      select m.id, m.strategy, m.symbol, m.as_of, m.features, m.series, m.rationale, m.tags, m.owner,
             m.embedding, m.embedder, m.embedder_version, m.input_hash, m.embedded_at, m.created_at,
             m.updated_at, 'retention policy ' || p.name
        from moved m
      returning id, as_of
    )
    select pg_catalog.count(*) over (), a.as_of, a.id into v_moved, v_as_of, v_id
      from archived a order by a.as_of desc, a.id desc limit 1;
    v_moved := coalesce(v_moved, 0);
    update quantops.prune_state s
       set wm_as_of = coalesce(v_as_of, s.wm_as_of), wm_id = coalesce(v_id, s.wm_id),
           moved = s.moved + v_moved, batches = s.batches + 1,
           finished_at = case when v_moved < batch_size then pg_catalog.clock_timestamp() end
     where s.policy_id = p.id;
    return pg_catalog.jsonb_build_object('policy', p.name, 'moved', v_moved,
                                         'run_finished', v_moved < batch_size, 'idle', false);
  end loop;
  return pg_catalog.jsonb_build_object('policy', null, 'moved', 0, 'run_finished', true, 'idle', true);
end
$$;

create or replace function quantops.restore_archived(ids bigint[] default null, reason text default null,
                                          max_rows integer default 10000)
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  n bigint;
begin
  perform quantops._require_primary('restore_archived');
  if ids is null and reason is null then
    raise exception 'give ids or reason' using errcode = '22004',
      hint = 'restore_archived(ids => array[...]) or restore_archived(reason => ''retention policy <name>'')';
  end if;
  if max_rows is null or max_rows < 1 or max_rows > 1000000 then
    raise exception 'max_rows must be between 1 and 1000000, not %', coalesce(max_rows::text, 'null') using errcode = '22023';
  end if;
  with picked as (
    select a.id from quantops.signal_embeddings_archive a
     where (ids is null or a.id = any (ids)) and (reason is null or a.archive_reason = reason)
     order by a.id limit max_rows
     for update of a
  ), moved as (
    delete from quantops.signal_embeddings_archive a using picked where a.id = picked.id returning a.*
  ), restored as (
    insert into quantops.signal_embeddings
      (id, strategy, symbol, as_of, features, series, rationale, tags, owner, embedding, embedder,
       embedder_version, input_hash, embedded_at, created_at, updated_at)
    overriding system value
    select m.id, m.strategy, m.symbol, m.as_of, m.features, m.series, m.rationale, m.tags, m.owner,
           m.embedding, m.embedder, m.embedder_version, m.input_hash, m.embedded_at, m.created_at, m.updated_at
      from moved m
    returning 1
  )
  select count(*) into n from restored;
  return n;
end
$$;

create or replace function quantops._prune_record(run bigint, moved bigint, report jsonb) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint := run;
begin
  perform quantops._require_primary('_prune_record');
  if v_id is null then
    insert into quantops.job_runs (job, runner) values ('prune', 'sql:' || quantops._caller_role()) returning id into v_id;
  elsif report is null then
    update quantops.job_runs set rows = moved
     where id = v_id and job = 'prune' and status = 'running' and pid = pg_catalog.pg_backend_pid();
  else
    update quantops.job_runs set status = 'succeeded', finished_at = pg_catalog.clock_timestamp(), rows = moved,
           details = report
     where id = v_id and job = 'prune' and status = 'running' and pid = pg_catalog.pg_backend_pid();
  end if;
  return v_id;
end
$$;

create or replace procedure quantops.prune(dry_run boolean default false, batch_size integer default 1000,
                                max_rows bigint default null, policy text default null,
                                inout report jsonb default null)
language plpgsql
-- no SET clause (a procedure with one cannot commit): it runs with its caller's rights under its
-- caller's search_path, so every type, function and operator in it is qualified, and literals
-- are typed (an unknown literal would let an operator of another schema win)
as $$
declare
  v_run     bigint;
  v_batch   pg_catalog.jsonb;
  v_moved   bigint := 0;
  v_batches integer := 0;
  v_started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
  v_before  pg_catalog.jsonb;
  v_after   pg_catalog.jsonb;
  v_per     pg_catalog.jsonb := '{}'::pg_catalog.jsonb;
begin
  perform quantops._require_primary('prune');
  if dry_run is null then
    raise exception 'dry_run must not be null' using errcode = '22004';
  end if;
  if max_rows is not null and max_rows operator(pg_catalog.<) 1::bigint then
    raise exception 'max_rows must be positive, not %', max_rows using errcode = '22023';
  end if;
  if dry_run then
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x)), '[]'::pg_catalog.jsonb) into v_per
      from quantops.prune_plan(policy) x;
    report := pg_catalog.jsonb_build_object('dry_run', true, 'policies', v_per,
      'rows_to_move', (select coalesce(pg_catalog.sum((e operator(pg_catalog.->>) 'rows_to_move'::pg_catalog.text)::bigint), 0::pg_catalog.numeric)
                         from pg_catalog.jsonb_array_elements(v_per) e));
    return;
  end if;
  if batch_size is null or batch_size operator(pg_catalog.<) 1 or batch_size operator(pg_catalog.>) 100000 then
    raise exception 'batch_size must be between 1 and 100000, not %', coalesce(batch_size::pg_catalog.text, 'null') using errcode = '22023';
  end if;
  v_before := quantops._prune_health();
  v_run := quantops._prune_record(null, null, null);
  perform quantops._prune_start(policy);
  commit;
  loop
    exit when max_rows is not null and v_moved operator(pg_catalog.>=) max_rows;
    v_batch := quantops.prune_batch(policy, case when max_rows is null then batch_size
                                                 else least(batch_size::bigint, max_rows operator(pg_catalog.-) v_moved)::integer end);
    exit when (v_batch operator(pg_catalog.->>) 'idle'::pg_catalog.text)::boolean;
    v_moved := v_moved operator(pg_catalog.+) (v_batch operator(pg_catalog.->>) 'moved'::pg_catalog.text)::bigint;
    v_batches := v_batches operator(pg_catalog.+) 1;
    v_per := pg_catalog.jsonb_set(v_per, array[v_batch operator(pg_catalog.->>) 'policy'::pg_catalog.text],
               pg_catalog.to_jsonb(coalesce((v_per operator(pg_catalog.->>) (v_batch operator(pg_catalog.->>) 'policy'::pg_catalog.text))::bigint, 0::bigint)
                                   operator(pg_catalog.+) (v_batch operator(pg_catalog.->>) 'moved'::pg_catalog.text)::bigint));
    perform quantops._prune_record(v_run, v_moved, null);
    commit;
  end loop;
  v_after := quantops._prune_health();
  report := pg_catalog.jsonb_build_object('run_id', v_run, 'moved', v_moved, 'batches', v_batches,
    'by_policy', v_per, 'duration_ms', pg_catalog.round((extract(epoch from pg_catalog.clock_timestamp() operator(pg_catalog.-) v_started)
                                                            operator(pg_catalog.*) 1000::pg_catalog.numeric), 1),
    'health_before', v_before, 'health_after', v_after);
  perform quantops._prune_record(v_run, v_moved, report);
  commit;
end
$$;

create or replace function quantops.create_model(name text, kind text default 'model', description text default '')
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint;
begin
  perform quantops._require_primary('create_model');
  if name is null or kind is null then
    raise exception 'name and kind must not be null' using errcode = '22004';
  end if;
  if name !~ '^[a-z][a-z0-9_.-]{0,127}$' then
    raise exception 'invalid model name "%"', name using errcode = '22023',
      detail = 'a name is 1 to 128 characters: a lower-case letter, then lower-case letters, digits, ".", "_" or "-"';
  end if;
  if kind not in ('model', 'feature_script') then
    raise exception 'unknown kind "%"', kind using errcode = '22023', hint = 'kind is model or feature_script';
  end if;
  insert into quantops.models (name, kind, description, owner)
    values (create_model.name, create_model.kind, coalesce(create_model.description, ''), quantops.uid())
  on conflict on constraint models_name_key do nothing
  returning id into v_id;
  if v_id is null then
    select m.id into v_id from quantops.models m where m.name = create_model.name and m.kind = create_model.kind;
    if v_id is null then
      raise exception 'model "%" exists with another kind', name using errcode = '23505';
    end if;
  end if;
  return v_id;
end
$$;

create or replace function quantops.register_model_version(model text, artifact_prefix text default null,
                                                manifest_sha256 text default null, metrics jsonb default '{}'::jsonb,
                                                description text default '', artifact_bucket text default 'model-artifacts')
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  m  quantops.models;
  v  integer;
  p  text;
  h  bytea;
begin
  perform quantops._require_primary('register_model_version');
  m := quantops._model(model);
  perform 1 from quantops.models x where x.id = m.id for update;
  select coalesce(max(x.version), 0) + 1 into v from quantops.model_versions x where x.model_id = m.id;
  p := coalesce(artifact_prefix, pg_catalog.format('backtests/%s/%s/', m.name, v));
  if p !~ '/$' then
    p := p || '/';
  end if;
  if p ~ '(^/|\.\.|[[:cntrl:]])' or pg_catalog.length(p) > 1024 then
    raise exception 'invalid artifact_prefix "%"', p using errcode = '22023',
      detail = 'a prefix is relative to its bucket: no leading "/", no "..", no control characters';
  end if;
  if manifest_sha256 is not null then
    if manifest_sha256 !~ '^[0-9a-f]{64}$' then
      raise exception 'manifest_sha256 must be 64 lower-case hex digits' using errcode = '22023';
    end if;
    h := pg_catalog.decode(manifest_sha256, 'hex');
  end if;
  if metrics is null or pg_catalog.jsonb_typeof(metrics) <> 'object' then
    raise exception 'metrics must be a JSON object' using errcode = '22023';
  end if;
  if pg_catalog.jsonb_path_exists(metrics, 'strict $.** ? (@.type() == "string" && (@ == "NaN" || @ == "Infinity" || @ == "-Infinity"))') then
    raise exception 'metrics must be finite numbers' using errcode = '22023';
  end if;
  insert into quantops.model_versions (model_id, version, artifact_bucket, artifact_prefix, manifest_sha256, metrics, description)
    values (m.id, v, coalesce(artifact_bucket, 'model-artifacts'), p, h, metrics, coalesce(description, ''));
  insert into quantops.audit_log (stream, action, args, outcome, detail)
    values ('quantops', 'register_model_version', pg_catalog.jsonb_build_object('model', m.name),
            'ok', pg_catalog.jsonb_build_object('version', v, 'artifact_prefix', p));
  return v;
end
$$;

create or replace function quantops.promote(model text, version integer, alias text, expected_current integer,
                                 reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  m    quantops.models;
  cur  quantops.model_aliases;
  bad  text[];
begin
  perform quantops._require_primary('promote');
  m := quantops._model(model);
  if version is null or alias is null then
    raise exception 'version and alias must not be null' using errcode = '22004';
  end if;
  if alias !~ '^[a-z][a-z0-9_-]{0,62}$' then
    raise exception 'invalid alias "%"', alias using errcode = '22023';
  end if;
  if not exists (select 1 from quantops.model_versions v where v.model_id = m.id and v.version = promote.version) then
    raise exception 'version % of model "%" does not exist', version, m.name using errcode = '42704';
  end if;
  -- the compare-and-set: lock the alias row (or the model, for an alias not created yet)
  perform 1 from quantops.models x where x.id = m.id for update;
  select * into cur from quantops.model_aliases a where a.model_id = m.id and a.alias = promote.alias for update;
  if cur.version is distinct from expected_current then
    raise exception 'alias "%" of model "%" points at %, not %', alias, m.name,
      coalesce('version ' || cur.version, 'nothing'), coalesce('version ' || expected_current, 'nothing')
      using errcode = '40001',
            detail = pg_catalog.format('current: %s', coalesce(cur.version::text, 'null')),
            hint = 'read the alias again and retry with expected_current set to what it points at now';
  end if;
  bad := quantops._gate_violations(m.id, version, alias);
  if pg_catalog.cardinality(bad) > 0 then
    raise exception 'version % of model "%" may not take alias "%": %', version, m.name, alias,
      pg_catalog.array_to_string(bad, '; ')
      using errcode = '23514', detail = pg_catalog.array_to_string(bad, E'\n'),
            hint = 'the gates are quantops.promotion_policies and the artifact in storage.objects';
  end if;
  perform pg_catalog.set_config('quantops_registry.reason', coalesce(reason, 'promote'), true);
  perform quantops._gates_passed(pg_catalog.format('%s:%s:%s', m.id, alias, version));
  if cur.id is null then
    insert into quantops.model_aliases (model_id, alias, version) values (m.id, alias, version);
  elsif cur.version <> version then
    update quantops.model_aliases a set version = promote.version, updated_at = pg_catalog.now(),
           updated_by = quantops._caller_role()
     where a.id = cur.id;
  end if;
  perform pg_catalog.set_config('quantops_registry.reason', '', true);
  return pg_catalog.jsonb_build_object('model', m.name, 'alias', alias, 'version', version,
                                       'previous', cur.version, 'changed', cur.version is distinct from version);
end
$$;

create or replace function quantops.rollback(model text, alias text)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  m     quantops.models;
  cur   quantops.model_aliases;
  prev  integer;
begin
  perform quantops._require_primary('rollback');
  m := quantops._model(model);
  select * into cur from quantops.model_aliases a where a.model_id = m.id and a.alias = rollback.alias;
  if not found then
    raise exception 'alias "%" of model "%" does not exist', alias, m.name using errcode = '42704';
  end if;
  select h.version into prev from quantops.alias_history h
   where h.alias_id = cur.id and not pg_catalog.upper_inf(h.valid) and h.version <> cur.version
   order by pg_catalog.upper(h.valid) desc limit 1;
  if prev is null then
    raise exception 'alias "%" of model "%" has no previous version to roll back to', alias, m.name using errcode = '55000';
  end if;
  return quantops.promote(model, prev, alias, cur.version, 'rollback');
end
$$;

create or replace function quantops.set_promotion_policy(model text, alias text, min_sharpe double precision default null,
                                              max_drawdown double precision default null, min_trades integer default null,
                                              max_backtest_age interval default null, min_sortino double precision default null,
                                              min_hit_rate double precision default null, require_artifact boolean default true)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  mid bigint;
  r   quantops.promotion_policies;
begin
  perform quantops._require_primary('set_promotion_policy');
  if alias is null or require_artifact is null then
    raise exception 'alias and require_artifact must not be null' using errcode = '22004';
  end if;
  if alias !~ '^[a-z][a-z0-9_-]{0,62}$' then
    raise exception 'invalid alias "%"', alias using errcode = '22023';
  end if;
  if not quantops._finite(min_sharpe) or not quantops._finite(min_sortino) then
    raise exception 'min_sharpe and min_sortino must be finite' using errcode = '22023';
  end if;
  if max_drawdown is not null and not (max_drawdown between 0 and 1) then
    raise exception 'max_drawdown must be between 0 and 1, not %', max_drawdown using errcode = '22023';
  end if;
  if min_hit_rate is not null and not (min_hit_rate between 0 and 1) then
    raise exception 'min_hit_rate must be between 0 and 1, not %', min_hit_rate using errcode = '22023';
  end if;
  if min_trades is not null and min_trades < 0 then
    raise exception 'min_trades must be zero or more, not %', min_trades using errcode = '22023';
  end if;
  if max_backtest_age is not null and max_backtest_age <= interval '0' then
    raise exception 'max_backtest_age must be a positive interval' using errcode = '22023';
  end if;
  if model is not null then
    mid := (quantops._model(model)).id;
  end if;
  delete from quantops.promotion_policies p where coalesce(p.model_id, 0) = coalesce(mid, 0) and p.alias = set_promotion_policy.alias;
  insert into quantops.promotion_policies (model_id, alias, min_sharpe, max_drawdown, min_trades, max_backtest_age,
                                           min_sortino, min_hit_rate, require_artifact)
    values (mid, alias, min_sharpe, max_drawdown, min_trades, max_backtest_age, min_sortino, min_hit_rate, require_artifact)
    returning * into r;
  insert into quantops.audit_log (stream, action, args, outcome, detail)
    values ('quantops', 'set_promotion_policy', pg_catalog.jsonb_build_object('model', model, 'alias', alias), 'ok', pg_catalog.to_jsonb(r));
  return pg_catalog.to_jsonb(r);
end
$$;

create or replace function quantops.set_artifact_check(mode text) returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform quantops._require_primary('set_artifact_check');
  if mode is null or mode not in ('storage', 'off') then
    raise exception 'artifact check must be storage or off, not %', coalesce(mode, 'null') using errcode = '22023';
  end if;
  update quantops.settings set artifact_check = mode;
  insert into quantops.audit_log (stream, action, args, outcome) values ('quantops', 'set_artifact_check', pg_catalog.jsonb_build_object('mode', mode), 'ok');
  return mode;
end
$$;

create or replace function quantops.consume_events(consumer text, max_events integer default 100, lease_s integer default 60)
returns setof quantops.outbox
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform quantops._require_primary('consume_events');
  if consumer is null or pg_catalog.length(consumer) not between 1 and 200 then
    raise exception 'consumer must be a name of 1 to 200 characters' using errcode = '22023';
  end if;
  if max_events is null or max_events not between 1 and 10000 or lease_s is null or lease_s not between 1 and 86400 then
    raise exception 'max_events must be between 1 and 10000 and lease_s between 1 and 86400' using errcode = '22023';
  end if;
  return query
    update quantops.outbox o set leased_by = consumer, lease_until = pg_catalog.clock_timestamp() + lease_s * interval '1 second',
           deliveries = o.deliveries + 1
     where o.id in (select x.id from quantops.outbox x
                     where x.acked_at is null and (x.lease_until is null or x.lease_until < pg_catalog.clock_timestamp())
                     order by x.id limit max_events for update skip locked)
    returning o.*;
end
$$;

create or replace function quantops.ack_event(id bigint, consumer text) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform quantops._require_primary('ack_event');
  update quantops.outbox o set acked_at = pg_catalog.clock_timestamp(), acked_by = consumer
   where o.id = ack_event.id and o.acked_at is null and o.leased_by = consumer;
  if not found then
    if exists (select 1 from quantops.outbox o where o.id = ack_event.id and o.acked_at is not null) then
      return false;  -- already acknowledged: a retry of the ack changes nothing
    end if;
    raise exception 'event % is not leased by "%"', id, consumer using errcode = '55000';
  end if;
  return true;
end
$$;

create or replace function quantops.record_backtest(run_id text, strategy text, period_start timestamptz, period_end timestamptz,
                                         sharpe double precision default null, sortino double precision default null,
                                         max_drawdown double precision default null, cagr double precision default null,
                                         volatility double precision default null, hit_rate double precision default null,
                                         turnover double precision default null, trades integer default null,
                                         metrics jsonb default '{}'::jsonb, model text default null,
                                         model_version integer default null, artifact_path text default null)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  old  quantops.backtest_results;
  new_ quantops.backtest_results;
  diff text[];
  k    text;
  x    double precision;
begin
  perform quantops._require_primary('record_backtest');
  if run_id is null or strategy is null or period_start is null or period_end is null then
    raise exception 'run_id, strategy, period_start and period_end must not be null' using errcode = '22004';
  end if;
  foreach k in array array['sharpe', 'sortino', 'max_drawdown', 'cagr', 'volatility', 'hit_rate', 'turnover'] loop
    x := case k when 'sharpe' then sharpe when 'sortino' then sortino when 'max_drawdown' then max_drawdown
                when 'cagr' then cagr when 'volatility' then volatility when 'hit_rate' then hit_rate else turnover end;
    if not quantops._finite(x) then
      raise exception '% must be a finite number, not %', k, x using errcode = '22023';
    end if;
  end loop;
  if max_drawdown is not null and not (max_drawdown between 0 and 1) then
    raise exception 'max_drawdown must be between 0 and 1, not %', max_drawdown using errcode = '22023';
  end if;
  if hit_rate is not null and not (hit_rate between 0 and 1) then
    raise exception 'hit_rate must be between 0 and 1, not %', hit_rate using errcode = '22023';
  end if;
  if volatility is not null and volatility < 0 or turnover is not null and turnover < 0 or trades is not null and trades < 0 then
    raise exception 'volatility, turnover and trades must not be negative' using errcode = '22023';
  end if;
  if period_end <= period_start then
    raise exception 'period_end must be after period_start' using errcode = '22023';
  end if;
  if (model is null) <> (model_version is null) then
    raise exception 'give model and model_version together' using errcode = '22023';
  end if;
  if model is not null and not exists (select 1 from quantops.model_versions v join quantops.models m on m.id = v.model_id
                                        where m.name = record_backtest.model and v.version = record_backtest.model_version) then
    perform quantops._model(model);
    raise exception 'version % of model "%" does not exist', model_version, model using errcode = '42704';
  end if;
  select * into old from quantops.backtest_results b where b.run_id = record_backtest.run_id;
  if found then
    diff := array_remove(array[
      case when old.strategy is distinct from strategy then 'strategy' end,
      case when old.period_start is distinct from period_start then 'period_start' end,
      case when old.period_end is distinct from period_end then 'period_end' end,
      case when old.sharpe is distinct from sharpe then 'sharpe' end,
      case when old.sortino is distinct from sortino then 'sortino' end,
      case when old.max_drawdown is distinct from max_drawdown then 'max_drawdown' end,
      case when old.cagr is distinct from cagr then 'cagr' end,
      case when old.volatility is distinct from volatility then 'volatility' end,
      case when old.hit_rate is distinct from hit_rate then 'hit_rate' end,
      case when old.turnover is distinct from turnover then 'turnover' end,
      case when old.trades is distinct from trades then 'trades' end,
      case when old.metrics is distinct from coalesce(metrics, '{}'::jsonb) then 'metrics' end,
      case when old.model_name is distinct from model then 'model' end,
      case when old.model_version is distinct from model_version then 'model_version' end,
      case when old.artifact_path is distinct from artifact_path then 'artifact_path' end], null);
    if pg_catalog.cardinality(diff) > 0 then
      raise exception 'backtest "%" was recorded with different content', run_id using errcode = '23505',
        detail = pg_catalog.format('differs in: %s', pg_catalog.array_to_string(diff, ', ')),
        hint = 'a run id names one backtest; give a new run id to a new run';
    end if;
    return pg_catalog.to_jsonb(old) || pg_catalog.jsonb_build_object('created', false);
  end if;
  insert into quantops.backtest_results (run_id, strategy, period_start, period_end, sharpe, sortino, max_drawdown, cagr,
                                         volatility, hit_rate, turnover, trades, metrics, model_name, model_version,
                                         artifact_path, owner)
    values (run_id, strategy, period_start, period_end, sharpe, sortino, max_drawdown, cagr, volatility, hit_rate,
            turnover, trades, coalesce(metrics, '{}'::jsonb), model, model_version, artifact_path, quantops.uid())
  on conflict on constraint backtest_results_run_id_key do nothing
  returning * into new_;
  if new_.id is null then
    -- a concurrent call with the same run id won the insert: answer as its retry would
    return quantops.record_backtest(run_id, strategy, period_start, period_end, sharpe, sortino, max_drawdown, cagr,
                                    volatility, hit_rate, turnover, trades, metrics, model, model_version, artifact_path);
  end if;
  return pg_catalog.to_jsonb(new_) || pg_catalog.jsonb_build_object('created', true);
end
$$;
