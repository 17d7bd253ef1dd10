-- quantops bootstrap: tables, row level security, triggers and SQL helpers.
-- Runs first in CREATE EXTENSION quantops; the Rust functions follow, then sql/finalize.sql.
-- The install script runs with search_path = quantops, <schemas of required extensions>, so the
-- unqualified type `vector` resolves to pgvector's wherever it lives (Supabase: `extensions`).
-- Everything else is schema-qualified.

-- ---------------------------------------------------------------------------------------------
-- Who may execute what: one row per routine granted to an API role, inserted right after the
-- routine's definition (here, in the other sql/ files, and next to each #[pg_extern] in src/).
-- grant_roles() grants from it (the install script, every upgrade, and by hand after the roles
-- were created late); the role-matrix test reads it too. A routine with no row is executable by
-- the extension's owner only. Tiers: anon, authenticated, service_role, postgres; each tier also
-- goes to the roles above it (see grant_roles).
-- ---------------------------------------------------------------------------------------------
create table quantops.routine_grants (
  routine text primary key,   -- 'quantops.name(argument types)'; @vector@ is pgvector's type, qualified
  tier    text not null check (tier in ('anon', 'authenticated', 'service_role', 'postgres'))
);
alter table quantops.routine_grants enable row level security;
create policy readable on quantops.routine_grants for select using (true);

-- ---------------------------------------------------------------------------------------------
-- Identity, the way Supabase's auth.uid()/auth.role() read it (PostgREST sets these per request)
-- ---------------------------------------------------------------------------------------------
-- No SET clause, so that PostgreSQL inlines it (in RLS policies and triggers it is then as cheap
-- as the expression); every name and operator in it is pg_catalog-qualified instead, so no
-- search_path can change what it means.
create function quantops.uid() returns uuid
language sql stable parallel safe
as $$
  -- CASE with a qualified operator, not NULLIF: NULLIF looks up "=" on the search_path
  select coalesce(
    case when pg_catalog.current_setting('request.jwt.claim.sub', true) operator(pg_catalog.=) '' then null
         else pg_catalog.current_setting('request.jwt.claim.sub', true) end,
    (case when pg_catalog.current_setting('request.jwt.claims', true) operator(pg_catalog.=) '' then null
          else pg_catalog.current_setting('request.jwt.claims', true) end)::pg_catalog.jsonb
       operator(pg_catalog.->>) 'sub'
  )::pg_catalog.uuid
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.uid()', 'anon');
comment on function quantops.uid() is
  'the caller''s user id from the JWT claims that PostgREST sets (same result as Supabase''s auth.uid())';

-- The role that called us, also from inside SECURITY DEFINER functions: the role set with
-- SET ROLE / set_config('role', ...) as PostgREST does, else the login role.
create function quantops._caller_role() returns text
language sql stable
as $$
  select case when pg_catalog.current_setting('role') operator(pg_catalog.=) any (array['none', '']::pg_catalog.text[])
              then session_user::pg_catalog.text
              else pg_catalog.current_setting('role') end
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops._caller_role()', 'service_role');

-- A function that writes refuses to run on a read replica with 25006 and says where to go,
-- before it does anything (PostgreSQL alone would say only "cannot execute INSERT in a read-only
-- transaction", or fail earlier assigning a transaction id).
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
insert into quantops.routine_grants (routine, tier) values ('quantops._require_primary(text)', 'service_role');

-- ---------------------------------------------------------------------------------------------
-- Settings: one row. quantops.configure(dims => ...) writes it; set_artifact_check() the last.
-- ---------------------------------------------------------------------------------------------
create table quantops.settings (
  id             boolean primary key default true check (id),
  embedding_dims integer check (embedding_dims between 1 and 2000),
  index_metric   text not null default 'cosine' check (index_metric in ('cosine', 'l2', 'ip')),
  index_lists    integer check (index_lists between 1 and 32768),
  configured_at  timestamptz,
  configured_by  text,
  -- the probes that the last recall measurement found for the target recall; null = sqrt(lists)
  search_probes  integer check (search_probes between 1 and 32768),
  artifact_check text not null default 'storage' check (artifact_check in ('storage', 'off'))
);
comment on column quantops.settings.artifact_check is
  'storage: promotion requires an object under the version''s prefix in storage.objects; off: no artifact check (set explicitly where there is no storage schema)';
insert into quantops.settings default values;

-- ---------------------------------------------------------------------------------------------
-- Signals and their embeddings
-- ---------------------------------------------------------------------------------------------
-- Both are inlined into the check constraints that call them (no SET clause, every operator
-- qualified), so a write pays an expression, not a function call per row.
create function quantops._finite_array(a double precision[]) returns boolean
language sql immutable parallel safe
as $$
  select a is null or (
    pg_catalog.array_ndims(a) operator(pg_catalog.=) 1
    and pg_catalog.array_position(a, null) is null
    and not ('NaN'::pg_catalog.float8 operator(pg_catalog.=) any (a) or 'Infinity'::pg_catalog.float8 operator(pg_catalog.=) any (a)
             or '-Infinity'::pg_catalog.float8 operator(pg_catalog.=) any (a))
  ) or pg_catalog.cardinality(a) operator(pg_catalog.=) 0
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops._finite_array(double precision[])', 'authenticated');

create function quantops._finite(x double precision) returns boolean
language sql immutable parallel safe
as $$
  select x is null or not (x operator(pg_catalog.=) 'NaN'::pg_catalog.float8 or x operator(pg_catalog.=) 'Infinity'::pg_catalog.float8
                           or x operator(pg_catalog.=) '-Infinity'::pg_catalog.float8)
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops._finite(double precision)', 'authenticated');

create table quantops.signal_embeddings (
  id               bigint generated always as identity primary key,
  strategy         text not null,
  symbol           text not null,
  as_of            timestamptz not null,
  features         jsonb not null default '{}'::jsonb,
  series           double precision[],
  rationale        text,
  tags             text[] not null default '{}',
  owner            uuid default quantops.uid(),
  embedding        vector,
  embedder         text,
  embedder_version text,
  input_hash       bytea,
  embedded_at      timestamptz,
  created_at       timestamptz not null default pg_catalog.now(),
  updated_at       timestamptz not null default pg_catalog.now(),
  constraint signal_embeddings_strategy_check check (pg_catalog.length(strategy) between 1 and 128 and strategy !~ '[[:cntrl:]]'),
  constraint signal_embeddings_symbol_check   check (pg_catalog.length(symbol) between 1 and 64 and symbol !~ '[[:cntrl:]]'),
  constraint signal_embeddings_features_check check (pg_catalog.jsonb_typeof(features) = 'object'),
  constraint signal_embeddings_series_check   check (quantops._finite_array(series)),
  constraint signal_embeddings_embedder_check check (embedding is null or embedder is not null),
  constraint signal_embeddings_natural_key unique nulls not distinct (owner, strategy, symbol, as_of)
)
-- A signal with its vector (1,544 bytes at 384 dims) is over the default 2 kB TOAST threshold:
-- PostgreSQL would try to compress the row's jsonb and move the vector into the TOAST table on
-- every write (an extra heap and index insert), and every search would fetch it back. Rows stay
-- whole up to a page; only a row larger than that is toasted.
with (toast_tuple_target = 8160);
create index signal_embeddings_strategy_symbol_as_of_idx on quantops.signal_embeddings (strategy, symbol, as_of);
create index signal_embeddings_owner_idx on quantops.signal_embeddings (owner);
comment on table quantops.signal_embeddings is
  'trading signals (strategy, symbol, as_of) with their inputs and their embedding; the dimension is set by quantops.configure(dims => ...)';

create table quantops.signal_embeddings_archive (
  id               bigint primary key,
  strategy         text not null,
  symbol           text not null,
  as_of            timestamptz not null,
  features         jsonb not null,
  series           double precision[],
  rationale        text,
  tags             text[] not null default '{}',
  owner            uuid,
  embedding        vector,
  embedder         text,
  embedder_version text,
  input_hash       bytea,
  embedded_at      timestamptz,
  created_at       timestamptz not null,
  updated_at       timestamptz not null,
  archived_at      timestamptz not null default pg_catalog.now(),
  archive_reason   text not null check (pg_catalog.length(archive_reason) between 1 and 200)
)
with (toast_tuple_target = 8160);
create index signal_embeddings_archive_strategy_symbol_as_of_idx
  on quantops.signal_embeddings_archive (strategy, symbol, as_of);
create index signal_embeddings_archive_owner_idx on quantops.signal_embeddings_archive (owner);

create function quantops._touch_updated_at() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
-- updated_at tells when the signal's data changed; writing its embedding does not count
create trigger signal_embeddings_touch
  before update of strategy, symbol, as_of, features, series, rationale, tags, owner on quantops.signal_embeddings
  for each row execute function quantops._touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Backtests
-- ---------------------------------------------------------------------------------------------
create table quantops.backtest_results (
  id             bigint generated always as identity primary key,
  run_id         text not null,
  strategy       text not null,
  model_name     text,
  model_version  integer,
  period_start   timestamptz not null,
  period_end     timestamptz not null,
  sharpe         double precision,
  sortino        double precision,
  max_drawdown   double precision,
  cagr           double precision,
  volatility     double precision,
  hit_rate       double precision,
  turnover       double precision,
  trades         integer,
  metrics        jsonb not null default '{}'::jsonb,
  artifact_path  text,
  owner          uuid default quantops.uid(),
  created_at     timestamptz not null default pg_catalog.now(),
  constraint backtest_results_run_id_key unique (run_id),
  constraint backtest_results_run_id_check check (pg_catalog.length(run_id) between 1 and 200),
  constraint backtest_results_strategy_check check (pg_catalog.length(strategy) between 1 and 128 and strategy !~ '[[:cntrl:]]'),
  constraint backtest_results_period_check check (period_end > period_start),
  constraint backtest_results_finite_check check (
    quantops._finite(sharpe) and quantops._finite(sortino) and quantops._finite(max_drawdown)
    and quantops._finite(cagr) and quantops._finite(volatility) and quantops._finite(hit_rate)
    and quantops._finite(turnover)),
  constraint backtest_results_max_drawdown_check check (max_drawdown between 0 and 1),
  constraint backtest_results_hit_rate_check check (hit_rate between 0 and 1),
  constraint backtest_results_volatility_check check (volatility >= 0),
  constraint backtest_results_turnover_check check (turnover >= 0),
  constraint backtest_results_trades_check check (trades >= 0),
  constraint backtest_results_model_check check ((model_name is null) = (model_version is null)),
  constraint backtest_results_metrics_check check (pg_catalog.jsonb_typeof(metrics) = 'object'),
  constraint backtest_results_artifact_path_check check (artifact_path is null or (
    pg_catalog.length(artifact_path) between 1 and 1024 and artifact_path !~ '(^/|\.\.|[[:cntrl:]])'))
);
create index backtest_results_strategy_idx on quantops.backtest_results (strategy, period_end);
create index backtest_results_owner_idx on quantops.backtest_results (owner);

-- ---------------------------------------------------------------------------------------------
-- The scheduler: jobs, their runs, the workers' heartbeats
-- ---------------------------------------------------------------------------------------------
create table quantops.jobs (
  name         text primary key check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  enabled      boolean not null default true,
  run_every    interval not null check (run_every >= interval '1 second'),
  next_run_at  timestamptz not null default pg_catalog.now(),
  description  text
);
insert into quantops.jobs (name, run_every, description) values
  ('verify-audit', interval '1 hour', 'verify the hash chain of every audit stream');

create table quantops.job_runs (
  id           bigint generated always as identity primary key,
  job          text not null,
  started_at   timestamptz not null default pg_catalog.clock_timestamp(),
  finished_at  timestamptz,
  status       text not null default 'running' check (status in ('running', 'succeeded', 'failed')),
  rows         bigint,
  error        text,
  details      jsonb not null default '{}'::jsonb,
  runner       text not null,
  pid          integer not null default pg_catalog.pg_backend_pid(),
  constraint job_runs_finished_check check ((status = 'running') = (finished_at is null))
);
create index job_runs_job_started_idx on quantops.job_runs (job, started_at desc);

create table quantops.workers (
  name          text primary key,
  pid           integer not null,
  database      text not null,
  started_at    timestamptz not null,
  heartbeat_at  timestamptz not null,
  naptime_s     integer not null,
  state         text not null
);

-- ---------------------------------------------------------------------------------------------
-- The audit trail: append-only, hash-chained per stream
-- ---------------------------------------------------------------------------------------------
create table quantops.audit_log (
  stream       text not null check (stream in ('quantops', 'tool_calls', 'flow_runs')),
  seq          bigint not null,
  at           timestamptz not null default pg_catalog.clock_timestamp(),
  actor        uuid,
  actor_role   text not null,
  action       text not null check (pg_catalog.length(action) between 1 and 200),
  args         jsonb not null default '{}'::jsonb,
  outcome      text not null check (outcome in ('started', 'ok', 'error')),
  detail       jsonb,
  duration_us  bigint check (duration_us >= 0),
  call_id      uuid,
  prev_hash    bytea not null,
  hash         bytea not null,
  primary key (stream, seq)
);
create index audit_log_call_id_idx on quantops.audit_log (call_id) where call_id is not null;
create index audit_log_actor_idx on quantops.audit_log (actor, at);
comment on table quantops.audit_log is
  'append-only audit trail; each row carries sha256(prev_hash || payload) of its stream; quantops.verify_audit() checks the chains';

create table quantops.audit_heads (
  stream  text primary key,
  seq     bigint not null,
  hash    bytea not null
);

-- The canonical text that a row's hash covers. Independent of TimeZone, DateStyle and
-- extra_float_digits: timestamps as epoch microseconds, jsonb in its canonical output form.
create function quantops._audit_payload(r quantops.audit_log) returns text
language sql stable
as $$
  select pg_catalog.jsonb_build_object(
    'stream', r.stream, 'seq', r.seq,
    'at_us', (pg_catalog.date_part('epoch', r.at) operator(pg_catalog.*) 1000000)::pg_catalog.numeric(20, 0),
    'actor', r.actor, 'actor_role', r.actor_role, 'action', r.action, 'args', r.args,
    'outcome', r.outcome, 'detail', r.detail, 'duration_us', r.duration_us, 'call_id', r.call_id
  )::pg_catalog.text
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops._audit_payload(quantops.audit_log)', 'service_role');

create function quantops._audit_chain() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_seq  bigint;
  v_prev bytea;
begin
  new.actor := coalesce(new.actor, quantops.uid());
  new.actor_role := coalesce(new.actor_role, quantops._caller_role());
  -- the row lock on the head serialises writers of one stream; under READ COMMITTED the locking
  -- read returns the newest head, so the chain never forks
  select h.seq, h.hash into v_seq, v_prev from quantops.audit_heads h where h.stream = new.stream for update;
  if not found then
    insert into quantops.audit_heads (stream, seq, hash)
      values (new.stream, 0, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'))
      on conflict (stream) do nothing;
    select h.seq, h.hash into v_seq, v_prev from quantops.audit_heads h where h.stream = new.stream for update;
  end if;
  v_seq := v_seq + 1;
  new.seq := v_seq;
  new.prev_hash := v_prev;
  new.hash := quantops._audit_digest(v_prev, quantops._audit_payload(new));
  update quantops.audit_heads set seq = v_seq, hash = new.hash where stream = new.stream;
  return new;
end
$$;
create trigger audit_log_chain before insert on quantops.audit_log
  for each row execute function quantops._audit_chain();

create function quantops._append_only() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'quantops.% is append-only', tg_table_name
    using errcode = '42501',
          detail = pg_catalog.format('%s is not allowed on this table, for any role', tg_op),
          hint = 'audit rows are never changed or removed; quantops.verify_audit() detects tampering';
end
$$;
create trigger audit_log_append_only before update or delete on quantops.audit_log
  for each row execute function quantops._append_only();
create trigger audit_log_no_truncate before truncate on quantops.audit_log
  for each statement execute function quantops._append_only();
create trigger audit_heads_no_delete before delete on quantops.audit_heads
  for each row execute function quantops._append_only();
create trigger audit_heads_no_truncate before truncate on quantops.audit_heads
  for each statement execute function quantops._append_only();
-- fire even with session_replication_role = replica: no unchained or rewritten row, ever
alter table quantops.audit_log enable always trigger audit_log_chain;
alter table quantops.audit_log enable always trigger audit_log_append_only;
alter table quantops.audit_log enable always trigger audit_log_no_truncate;
alter table quantops.audit_heads enable always trigger audit_heads_no_delete;
alter table quantops.audit_heads enable always trigger audit_heads_no_truncate;

-- ---------------------------------------------------------------------------------------------
-- Row level security: on for every table. Privileges decide which roles reach a table at all,
-- policies decide which rows. Policies name no role (so the extension installs on plain
-- PostgreSQL without Supabase's roles); grants do, in quantops.grant_roles().
-- ---------------------------------------------------------------------------------------------
alter table quantops.settings                  enable row level security;
alter table quantops.signal_embeddings         enable row level security;
alter table quantops.signal_embeddings_archive enable row level security;
alter table quantops.backtest_results          enable row level security;
alter table quantops.jobs                      enable row level security;
alter table quantops.job_runs                  enable row level security;
alter table quantops.workers                   enable row level security;
alter table quantops.audit_log                 enable row level security;
alter table quantops.audit_heads               enable row level security;

-- A row with an owner belongs to that user; rows without an owner are shared, maintained by
-- roles that bypass RLS (service_role, the table owner).
create policy own_rows on quantops.signal_embeddings
  using (owner = quantops.uid()) with check (owner = quantops.uid());
create policy own_rows on quantops.signal_embeddings_archive
  using (owner = quantops.uid());
create policy own_rows on quantops.backtest_results
  using (owner = quantops.uid()) with check (owner = quantops.uid());
create policy own_rows on quantops.audit_log
  using (actor = quantops.uid());
create policy readable on quantops.settings for select using (true);
create policy readable on quantops.jobs for select using (true);
create policy readable on quantops.job_runs for select using (true);
create policy readable on quantops.workers for select using (true);
create policy readable on quantops.audit_heads for select using (true);

-- Grants for Supabase's roles that exist when it runs. finalize.sql calls it once; run it again
-- (as the extension's owner) after creating the roles later on a plain PostgreSQL.
--
-- Routines: one row of quantops.routine_grants each (next to its definition), a tier each:
--   anon          reads that write nothing (flags)
--   authenticated an agent's RPCs, under its RLS
--   service_role  flows and maintenance (Prefect, pg_cron jobs scheduled with the service key)
--   postgres      Supabase's administrator (Studio, migrations): NOT a superuser there. It gets
--                 exactly the service_role tier plus configure() and set_artifact_check(), and
--                 SELECT on every table; never an internal helper (a name starting with "_")
--                 unless a caller-rights routine of its tier needs it, and never a write to a
--                 table that a gate, a chain or the worker trusts.
-- Routines with no row are executable by the extension's owner only (triggers, internal
-- helpers, the gates' token).
create function quantops.grant_roles() returns void
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

-- Data tables are user data: pg_dump must dump their rows, not only their definitions.
select pg_catalog.pg_extension_config_dump('quantops.signal_embeddings', '');
select pg_catalog.pg_extension_config_dump('quantops.signal_embeddings_archive', '');
select pg_catalog.pg_extension_config_dump('quantops.backtest_results', '');
select pg_catalog.pg_extension_config_dump('quantops.job_runs', '');
select pg_catalog.pg_extension_config_dump('quantops.audit_log', '');
select pg_catalog.pg_extension_config_dump('quantops.audit_heads', '');
