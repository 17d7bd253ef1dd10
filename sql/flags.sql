-- Feature flags that gate strategies: definitions (validated in Rust when written, by any path),
-- every change audited with the value before and after, sampled exposures.
-- Runs after registry.sql; the Rust functions it calls at run time are created after it.

create table quantops.flags (
  key          text primary key check (key ~ '^[a-z][a-z0-9_.:-]{0,127}$'),
  definition   jsonb not null,
  updated_at   timestamptz not null default pg_catalog.now(),
  updated_by   text not null default quantops._caller_role()
);
comment on table quantops.flags is
  'feature flags: definition = {environments, kill_switch, rules, variants, description}; write with quantops.set_flag()';

-- Sampled exposures (which context got which variant), for experiments; quantops.flag_exposure_sample.
create table quantops.flag_exposures (
  id          bigint generated always as identity primary key,
  at          timestamptz not null default pg_catalog.clock_timestamp(),
  flag_key    text not null,
  environment text not null,
  value       boolean not null,
  variant     text,
  reason      text not null,
  context     jsonb not null,
  actor       uuid default quantops.uid()
);
create index flag_exposures_flag_at_idx on quantops.flag_exposures (flag_key, at);

alter table quantops.flags enable row level security;
alter table quantops.flag_exposures enable row level security;
create policy readable on quantops.flags for select using (true);
create policy readable on quantops.flag_exposures for select using (true);
select pg_catalog.pg_extension_config_dump('quantops.flags', '');
select pg_catalog.pg_extension_config_dump('quantops.flag_exposures', '');

-- Every write, whoever makes it, is validated (22023 with what is wrong) ...
create function quantops._flags_validate() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform quantops._flag_check(new.key, new.definition);
  new.updated_at := pg_catalog.now();
  new.updated_by := quantops._caller_role();
  return new;
end
$$;
create trigger flags_validate before insert or update on quantops.flags
  for each row execute function quantops._flags_validate();
alter table quantops.flags enable always trigger flags_validate;

-- ... audited with the value before and after, and invalidates every backend's compiled flags
-- (a relcache invalidation: this transaction sees its change at once, others when it commits).
create function quantops._flags_changed() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into quantops.audit_log (stream, action, args, outcome, detail)
    values ('quantops', 'flag_' || pg_catalog.lower(tg_op),
            pg_catalog.jsonb_build_object('key', coalesce(new.key, old.key)), 'ok',
            pg_catalog.jsonb_build_object('before', case when tg_op <> 'INSERT' then old.definition end,
                                          'after', case when tg_op <> 'DELETE' then new.definition end));
  perform quantops._flags_invalidate();
  return null;
end
$$;
create trigger flags_changed after insert or update or delete on quantops.flags
  for each row execute function quantops._flags_changed();
alter table quantops.flags enable always trigger flags_changed;

create function quantops._flags_truncated() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into quantops.audit_log (stream, action, args, outcome) values ('quantops', 'flag_truncate', '{}', 'ok');
  perform quantops._flags_invalidate();
  return null;
end
$$;
create trigger flags_truncated after truncate on quantops.flags
  for each statement execute function quantops._flags_truncated();
alter table quantops.flags enable always trigger flags_truncated;

-- Creates or replaces a flag. The definition is checked first (22023 says what is wrong).
create function quantops.set_flag(key text, definition jsonb) returns jsonb
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
insert into quantops.routine_grants (routine, tier) values ('quantops.set_flag(text, jsonb)', 'service_role');

-- The kill switch: off for everyone, everywhere, at once (overrides every rule).
create function quantops.kill_flag(key text, killed boolean default true) returns jsonb
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
insert into quantops.routine_grants (routine, tier) values ('quantops.kill_flag(text, boolean)', 'service_role');

create function quantops.drop_flag(key text) returns boolean
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
insert into quantops.routine_grants (routine, tier) values ('quantops.drop_flag(text)', 'service_role');

-- The hot path, a C-convention function: it reads the jsonb context in place. Stable, so it can be
-- used in queries and RLS policies: using (quantops.flag_enabled('strategy.momentum_v2',
-- jsonb_build_object('user_id', auth.uid()))). No SET clause: it would cost a GUC save and restore
-- per call; the function runs no SQL that depends on search_path.
create function quantops.flag_enabled(key text, context jsonb default '{}'::jsonb) returns boolean
language c
stable
parallel safe
as 'MODULE_PATHNAME', 'quantops_flag_enabled';
insert into quantops.routine_grants (routine, tier) values ('quantops.flag_enabled(text, jsonb)', 'anon');
comment on function quantops.flag_enabled(text, jsonb) is
  'whether a feature flag is on for this context in quantops.environment; false for an unknown flag; usable in RLS policies';
