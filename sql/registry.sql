-- The model registry: models, versions, aliases with gated compare-and-set promotion, alias
-- history as non-overlapping time ranges, promotion policies, an outbox; validated backtests.
-- Runs after prune.sql; the Rust functions it calls at run time are created after it.

-- the gates read a version's newest backtest
create index backtest_results_model_idx on quantops.backtest_results (model_name, model_version, created_at desc)
  where model_name is not null;

create table quantops.models (
  id           bigint generated always as identity primary key,
  name         text not null unique check (name ~ '^[a-z][a-z0-9_.-]{0,127}$'),
  kind         text not null default 'model' check (kind in ('model', 'feature_script')),
  description  text not null default '' check (pg_catalog.length(description) <= 2000),
  owner        uuid default quantops.uid(),
  created_at   timestamptz not null default pg_catalog.now(),
  created_by   text not null default quantops._caller_role()
);
comment on table quantops.models is
  'registered models and feature scripts; owner null = shared with every authenticated user';

create table quantops.model_versions (
  model_id         bigint not null references quantops.models (id),
  version          integer not null check (version >= 1),
  artifact_bucket  text not null default 'model-artifacts' check (pg_catalog.length(artifact_bucket) between 1 and 100),
  artifact_prefix  text not null check (pg_catalog.length(artifact_prefix) between 1 and 1024
                     and artifact_prefix !~ '(^/|\.\.|[[:cntrl:]])' and artifact_prefix ~ '/$'),
  manifest_sha256  bytea check (manifest_sha256 is null or pg_catalog.length(manifest_sha256) = 32),
  metrics          jsonb not null default '{}'::jsonb check (pg_catalog.jsonb_typeof(metrics) = 'object'),
  description      text not null default '',
  created_at       timestamptz not null default pg_catalog.now(),
  created_by       text not null default quantops._caller_role(),
  primary key (model_id, version)
);

create table quantops.model_aliases (
  id          bigint generated always as identity primary key,
  model_id    bigint not null references quantops.models (id),
  alias       text not null check (alias ~ '^[a-z][a-z0-9_-]{0,62}$'),
  version     integer not null,
  updated_at  timestamptz not null default pg_catalog.now(),
  updated_by  text not null default quantops._caller_role(),
  unique (model_id, alias),
  foreign key (model_id, version) references quantops.model_versions (model_id, version)
);

-- What an alias pointed at, when: half-open ranges [from, to) that never overlap for one alias, so
-- "what was production at T" is one query (quantops.alias_asof).
create table quantops.alias_history (
  alias_id    bigint not null references quantops.model_aliases (id),
  model_id    bigint not null,
  alias       text not null,
  version     integer not null,
  valid       tstzrange not null check (not pg_catalog.isempty(valid)),
  set_by      text not null default quantops._caller_role(),
  reason      text,
  constraint alias_history_no_overlap exclude using gist (int8range(alias_id, alias_id, '[]') with &&, valid with &&)
);
-- the open range of an alias (the one a move closes): one at most, found directly
create unique index alias_history_one_open on quantops.alias_history (alias_id) where pg_catalog.upper_inf(valid);
-- the range before the current one (rollback)
create index alias_history_alias_idx on quantops.alias_history (alias_id, pg_catalog.upper(valid) desc);

-- The gates a version must pass to take an alias. model_id null = every model (a model's own row wins).
create table quantops.promotion_policies (
  id                bigint generated always as identity primary key,
  model_id          bigint references quantops.models (id),
  alias             text not null check (alias ~ '^[a-z][a-z0-9_-]{0,62}$'),
  min_sharpe        double precision check (quantops._finite(min_sharpe)),
  min_sortino       double precision check (quantops._finite(min_sortino)),
  max_drawdown      double precision check (max_drawdown between 0 and 1),
  min_trades        integer check (min_trades >= 0),
  min_hit_rate      double precision check (min_hit_rate between 0 and 1),
  max_backtest_age  interval check (max_backtest_age > interval '0'),
  require_artifact  boolean not null default true,
  updated_at        timestamptz not null default pg_catalog.now(),
  updated_by        text not null default quantops._caller_role()
);
create unique index promotion_policies_model_alias on quantops.promotion_policies (coalesce(model_id, 0), alias);

-- Events for flows (alias moved). A logged table plus NOTIFY quantops_outbox; a consumer leases
-- events and acknowledges each one, so each event is handled exactly once.
create table quantops.outbox (
  id            bigint generated always as identity primary key,
  topic         text not null,
  payload       jsonb not null,
  created_at    timestamptz not null default pg_catalog.clock_timestamp(),
  leased_by     text,
  lease_until   timestamptz,
  deliveries    integer not null default 0,
  acked_at      timestamptz,
  acked_by      text
);
create index outbox_pending_idx on quantops.outbox (id) where acked_at is null;

alter table quantops.models enable row level security;
alter table quantops.model_versions enable row level security;
alter table quantops.model_aliases enable row level security;
alter table quantops.alias_history enable row level security;
alter table quantops.promotion_policies enable row level security;
alter table quantops.outbox enable row level security;
-- shared models (no owner) and the caller's own are visible; writes go through the functions
create policy visible on quantops.models for select using (owner is null or owner = quantops.uid());
create policy visible on quantops.model_versions for select
  using (exists (select 1 from quantops.models m where m.id = model_id and (m.owner is null or m.owner = quantops.uid())));
create policy visible on quantops.model_aliases for select
  using (exists (select 1 from quantops.models m where m.id = model_id and (m.owner is null or m.owner = quantops.uid())));
create policy visible on quantops.alias_history for select
  using (exists (select 1 from quantops.models m where m.id = model_id and (m.owner is null or m.owner = quantops.uid())));
create policy readable on quantops.promotion_policies for select using (true);
create policy readable on quantops.outbox for select using (true);

select pg_catalog.pg_extension_config_dump('quantops.models', '');
select pg_catalog.pg_extension_config_dump('quantops.model_versions', '');
select pg_catalog.pg_extension_config_dump('quantops.model_aliases', '');
select pg_catalog.pg_extension_config_dump('quantops.alias_history', '');
select pg_catalog.pg_extension_config_dump('quantops.promotion_policies', '');
select pg_catalog.pg_extension_config_dump('quantops.outbox', '');

-- ---------------------------------------------------------------------------------------------
-- Gates: checked by promote() for a clear answer, and by a constraint trigger on every write of
-- an alias, so no role and no direct UPDATE moves an alias past them.
-- ---------------------------------------------------------------------------------------------
create function quantops._model(name text) returns quantops.models
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  m quantops.models;
begin
  if name is null then
    raise exception 'model must not be null' using errcode = '22004';
  end if;
  select * into m from quantops.models x where x.name = _model.name;
  if not found then
    raise exception 'model "%" does not exist', name using errcode = '42704',
      hint = 'quantops.create_model(name) registers it';
  end if;
  return m;
end
$$;

-- The violations of the gates for (model, version, alias); empty = it may take the alias.
create function quantops._gate_violations(p_model_id bigint, p_version integer, p_alias text) returns text[]
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  m   quantops.models;
  v   quantops.model_versions;
  pol quantops.promotion_policies;
  b   quantops.backtest_results;
  out text[] := '{}'::text[];
  chk text;
begin
  select * into m from quantops.models x where x.id = p_model_id;
  select * into v from quantops.model_versions x where x.model_id = p_model_id and x.version = p_version;
  if not found then
    return array[pg_catalog.format('version %s of model "%s" does not exist', p_version, m.name)];
  end if;
  select * into pol from quantops.promotion_policies p
   where p.alias = p_alias and (p.model_id = p_model_id or p.model_id is null)
   order by p.model_id nulls last limit 1;
  -- the artifact: under the version's prefix in Supabase Storage, unless turned off explicitly
  if pol.id is null or pol.require_artifact then
    select s.artifact_check into chk from quantops.settings s;
    if chk = 'storage' then
      if pg_catalog.to_regclass('storage.objects') is null then
        out := out || 'no storage.objects table to check the artifact in: set quantops.settings.artifact_check explicitly with quantops.set_artifact_check(''off'')'::text;
      -- read as the owner: only a plain table, whose read runs nobody's code (a view or a foreign
      -- table of that name, made where Storage is absent, would run its maker's code here)
      elsif (select c.relkind from pg_catalog.pg_class c where c.oid = pg_catalog.to_regclass('storage.objects')) <> 'r' then
        out := out || 'storage.objects is not a table: the artifact is not checked in a view or a foreign table'::text;
      elsif not quantops._artifact_exists(v.artifact_bucket, v.artifact_prefix) then
        out := out || pg_catalog.format('no artifact under %s/%s in storage.objects', v.artifact_bucket, v.artifact_prefix);
      end if;
    end if;
  end if;
  if pol.id is null then
    return out;
  end if;
  -- the newest backtest of this version
  select * into b from quantops.backtest_results r
   where r.model_name = m.name and r.model_version = p_version
   order by r.created_at desc, r.id desc limit 1;
  if b.id is null then
    if pol.min_sharpe is not null or pol.min_sortino is not null or pol.max_drawdown is not null
       or pol.min_trades is not null or pol.min_hit_rate is not null or pol.max_backtest_age is not null then
      out := out || pg_catalog.format('version %s of model "%s" has no backtest; the %s policy needs one', p_version, m.name, p_alias);
    end if;
    return out;
  end if;
  if pol.min_sharpe is not null and (b.sharpe is null or b.sharpe < pol.min_sharpe) then
    out := out || pg_catalog.format('sharpe %s of backtest "%s" is below the minimum %s', coalesce(b.sharpe::text, 'null'), b.run_id, pol.min_sharpe);
  end if;
  if pol.min_sortino is not null and (b.sortino is null or b.sortino < pol.min_sortino) then
    out := out || pg_catalog.format('sortino %s of backtest "%s" is below the minimum %s', coalesce(b.sortino::text, 'null'), b.run_id, pol.min_sortino);
  end if;
  if pol.max_drawdown is not null and (b.max_drawdown is null or b.max_drawdown > pol.max_drawdown) then
    out := out || pg_catalog.format('max drawdown %s of backtest "%s" is above the maximum %s', coalesce(b.max_drawdown::text, 'null'), b.run_id, pol.max_drawdown);
  end if;
  if pol.min_trades is not null and (b.trades is null or b.trades < pol.min_trades) then
    out := out || pg_catalog.format('%s trades in backtest "%s", the minimum is %s', coalesce(b.trades::text, 'no'), b.run_id, pol.min_trades);
  end if;
  if pol.min_hit_rate is not null and (b.hit_rate is null or b.hit_rate < pol.min_hit_rate) then
    out := out || pg_catalog.format('hit rate %s of backtest "%s" is below the minimum %s', coalesce(b.hit_rate::text, 'null'), b.run_id, pol.min_hit_rate);
  end if;
  if pol.max_backtest_age is not null and b.created_at < pg_catalog.now() - pol.max_backtest_age then
    out := out || pg_catalog.format('backtest "%s" is from %s, older than the maximum age %s', b.run_id, b.created_at, pol.max_backtest_age);
  end if;
  return out;
end
$$;

-- Whether storage.objects has an object under bucket/prefix. The caller checked that
-- storage.objects exists (PL/pgSQL plans this query at its first use only). The prefix range
-- [prefix, prefix || U+10FFFF) in the "C" collation, within the bucket.
create function quantops._artifact_exists(bucket text, prefix text) returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (select 1 from storage.objects o
                  where o.bucket_id = bucket and pg_catalog.left(o.name, pg_catalog.length(prefix)) = prefix);
end
$$;

create function quantops._alias_gates() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  bad text[];
begin
  if tg_op = 'UPDATE' and new.version = old.version and new.model_id = old.model_id and new.alias = old.alias then
    return null;
  end if;
  -- promote() checked these very gates a moment ago in this transaction
  if quantops._gates_consume(pg_catalog.format('%s:%s:%s', new.model_id, new.alias, new.version)) then
    return null;
  end if;
  bad := quantops._gate_violations(new.model_id, new.version, new.alias);
  if pg_catalog.cardinality(bad) > 0 then
    raise exception 'version % of model "%" may not take alias "%": %', new.version,
      (select m.name from quantops.models m where m.id = new.model_id), new.alias, pg_catalog.array_to_string(bad, '; ')
      using errcode = '23514', detail = pg_catalog.array_to_string(bad, E'\n'),
            hint = 'the gates are quantops.promotion_policies and the artifact in storage.objects';
  end if;
  return null;
end
$$;
-- Who moved an alias and when is recorded, not claimed; an alias keeps its model and its name
-- (the history, the outbox and the audit follow a move of its version).
create function quantops._alias_touch() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'UPDATE' and (new.model_id, new.alias) is distinct from (old.model_id, old.alias) then
    raise exception 'alias "%" cannot be renamed or given to another model', old.alias using errcode = '0A000',
      hint = 'promote() the version under the other alias; an alias''s history stays with it';
  end if;
  new.updated_at := pg_catalog.now();
  new.updated_by := quantops._caller_role();
  return new;
end
$$;
create trigger model_aliases_touch before insert or update on quantops.model_aliases
  for each row execute function quantops._alias_touch();
alter table quantops.model_aliases enable always trigger model_aliases_touch;

create constraint trigger model_aliases_gates after insert or update on quantops.model_aliases
  for each row execute function quantops._alias_gates();
alter table quantops.model_aliases enable always trigger model_aliases_gates;

-- History, outbox and audit follow every move of an alias, however it was made.
create function quantops._alias_moved() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  m       quantops.models;
  v_now   timestamptz := pg_catalog.clock_timestamp();
  v_prev  integer;
  v_event jsonb;
  v_reason text := nullif(pg_catalog.current_setting('quantops_registry.reason', true), '');
begin
  if tg_op = 'UPDATE' and new.version = old.version then
    return null;
  end if;
  select * into m from quantops.models x where x.id = coalesce(new.model_id, old.model_id);
  if tg_op in ('UPDATE', 'DELETE') then
    v_prev := old.version;
    update quantops.alias_history h set valid = pg_catalog.tstzrange(pg_catalog.lower(h.valid), v_now, '[)')
     where h.alias_id = old.id and pg_catalog.upper_inf(h.valid);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    insert into quantops.alias_history (alias_id, model_id, alias, version, valid, reason)
      values (new.id, new.model_id, new.alias, new.version, pg_catalog.tstzrange(v_now, null, '[)'), v_reason);
  end if;
  v_event := pg_catalog.jsonb_build_object('model', m.name, 'kind', m.kind, 'alias', coalesce(new.alias, old.alias),
    'version', case when tg_op = 'DELETE' then null else new.version end, 'previous', v_prev,
    'reason', v_reason, 'at', v_now, 'by', quantops._caller_role());
  insert into quantops.outbox (topic, payload)
    values (case when tg_op = 'DELETE' then 'alias.removed' else 'alias.moved' end, v_event);
  perform pg_catalog.pg_notify('quantops_outbox', v_event::text);
  insert into quantops.audit_log (stream, action, args, outcome, detail)
    values ('quantops', case when tg_op = 'DELETE' then 'alias_removed' else 'alias_moved' end,
            pg_catalog.jsonb_build_object('model', m.name, 'alias', coalesce(new.alias, old.alias)), 'ok', v_event);
  return null;
end
$$;
create trigger model_aliases_moved after insert or update or delete on quantops.model_aliases
  for each row execute function quantops._alias_moved();
alter table quantops.model_aliases enable always trigger model_aliases_moved;

-- History is written by the trigger only: closed ranges never change.
create function quantops._alias_history_guard() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'DELETE' or new.alias_id <> old.alias_id or new.version <> old.version
     or pg_catalog.lower(new.valid) <> pg_catalog.lower(old.valid) or not pg_catalog.upper_inf(old.valid) then
    raise exception 'quantops.alias_history is append-only' using errcode = '42501',
      detail = 'only the end of the open range is set, when the alias moves';
  end if;
  return new;
end
$$;
create trigger alias_history_guard before update or delete on quantops.alias_history
  for each row execute function quantops._alias_history_guard();
alter table quantops.alias_history enable always trigger alias_history_guard;

-- ---------------------------------------------------------------------------------------------
-- The SQL surface
-- ---------------------------------------------------------------------------------------------
create function quantops.create_model(name text, kind text default 'model', description text default '')
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
insert into quantops.routine_grants (routine, tier) values ('quantops.create_model(text, text, text)', 'service_role');

-- Registers the next version of a model. Concurrent registrations of one model serialise on
-- the model's row, so versions are 1, 2, 3, ... without gaps or duplicates.
create function quantops.register_model_version(model text, artifact_prefix text default null,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.register_model_version(text, text, text, jsonb, text, text)', 'service_role');

-- Moves an alias to a version if it still points at expected_current (null: the alias must not
-- exist yet), and the version passes the gates. One transaction: the alias, its history, the
-- outbox event and the audit row commit together or not at all.
create function quantops.promote(model text, version integer, alias text, expected_current integer,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.promote(text, integer, text, integer, text)', 'service_role');

-- Re-points an alias at the version it pointed at before the current one, through the same checks.
create function quantops.rollback(model text, alias text)
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
insert into quantops.routine_grants (routine, tier) values ('quantops.rollback(text, text)', 'service_role');

-- The version an alias pointed at, at a time (null: none then).
create function quantops.alias_asof(model text, alias text, at timestamptz default pg_catalog.now())
returns integer
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select h.version from quantops.alias_history h join quantops.models m on m.id = h.model_id
   where m.name = alias_asof.model and h.alias = alias_asof.alias and h.valid @> alias_asof.at
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.alias_asof(text, text, timestamptz)', 'authenticated');

-- Sets the gates of (model, alias); model null = the default for every model.
create function quantops.set_promotion_policy(model text, alias text, min_sharpe double precision default null,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.set_promotion_policy(text, text, double precision, double precision, integer, interval, double precision, double precision, boolean)', 'service_role');

create function quantops.set_artifact_check(mode text) returns text
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
insert into quantops.routine_grants (routine, tier) values ('quantops.set_artifact_check(text)', 'postgres');

-- Artifact prefixes that no alias points at now and none pointed at within `keep`, of versions
-- older than `keep`: for the Storage API to delete (quantops never deletes storage objects).
create function quantops.artifacts_to_delete(keep interval default interval '30 days')
returns table (model text, version integer, artifact_bucket text, artifact_prefix text, created_at timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if keep is null or keep < interval '0' then
    raise exception 'keep must be an interval of zero or more' using errcode = '22023';
  end if;
  return query
    select m.name, v.version, v.artifact_bucket, v.artifact_prefix, v.created_at
      from quantops.model_versions v join quantops.models m on m.id = v.model_id
     where v.created_at < pg_catalog.now() - keep
       and not exists (select 1 from quantops.model_aliases a where a.model_id = v.model_id and a.version = v.version)
       and not exists (select 1 from quantops.alias_history h where h.model_id = v.model_id and h.version = v.version
                         and (pg_catalog.upper_inf(h.valid) or pg_catalog.upper(h.valid) > pg_catalog.now() - keep))
     order by m.name, v.version;
end
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.artifacts_to_delete(interval)', 'service_role');

-- Leases up to max_events unacknowledged events (lease_s seconds); acknowledge each with ack_event.
-- An event whose lease runs out unacknowledged is delivered again: handle each event id once.
create function quantops.consume_events(consumer text, max_events integer default 100, lease_s integer default 60)
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
insert into quantops.routine_grants (routine, tier) values ('quantops.consume_events(text, integer, integer)', 'service_role');

create function quantops.ack_event(id bigint, consumer text) returns boolean
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
insert into quantops.routine_grants (routine, tier) values ('quantops.ack_event(bigint, text)', 'service_role');

-- ---------------------------------------------------------------------------------------------
-- Backtests
-- ---------------------------------------------------------------------------------------------
-- Records a backtest, idempotent by run_id: the same call again returns the same row and changes
-- nothing; the same run_id with different content is refused (23505).
create function quantops.record_backtest(run_id text, strategy text, period_start timestamptz, period_end timestamptz,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.record_backtest(text, text, timestamptz, timestamptz, double precision, double precision, double precision, double precision, double precision, double precision, double precision, integer, jsonb, text, integer, text)', 'service_role');

-- The best backtests, ranked per strategy by sharpe (ties: lower drawdown, newer). Runs as the
-- caller: each role sees the rows its policies let it see.
create view quantops.backtest_leaderboard with (security_invoker = true) as
select pg_catalog.rank() over (partition by b.strategy order by b.sharpe desc nulls last, b.max_drawdown asc nulls last, b.created_at desc) as rank,
       b.strategy, b.model_name, b.model_version, b.run_id, b.sharpe, b.sortino, b.max_drawdown, b.cagr,
       b.volatility, b.hit_rate, b.trades, b.period_start, b.period_end, b.created_at,
       (select pg_catalog.array_agg(a.alias order by a.alias) from quantops.model_aliases a join quantops.models m on m.id = a.model_id
         where m.name = b.model_name and a.version = b.model_version) as aliases
  from quantops.backtest_results b;

-- What is promoted, for agents: every alias (or the one named) of every model (or kind) the
-- caller may see, with the artifact's location.
create function quantops.discover(kind text default null, alias text default null)
returns table (kind text, model text, alias text, version integer, artifact_bucket text, artifact_prefix text,
               manifest_sha256 text, metrics jsonb, description text, promoted_at timestamptz)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select m.kind, m.name, a.alias, a.version, v.artifact_bucket, v.artifact_prefix,
         pg_catalog.encode(v.manifest_sha256, 'hex'), v.metrics, m.description, a.updated_at
    from quantops.model_aliases a
    join quantops.models m on m.id = a.model_id
    join quantops.model_versions v on v.model_id = a.model_id and v.version = a.version
   where (discover.kind is null or m.kind = discover.kind) and (discover.alias is null or a.alias = discover.alias)
   order by m.kind, m.name, a.alias
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.discover(text, text)', 'authenticated');
