-- Vector prune: retention policies, lossless batched moves to the archive, restore.
-- Runs after index.sql; the Rust functions it calls at run time are created after it.

-- An index on the signal's time orders the batches (and serves as_of filters).
create index signal_embeddings_as_of_id_idx on quantops.signal_embeddings (as_of, id);

-- ---------------------------------------------------------------------------------------------
-- Retention policies
-- ---------------------------------------------------------------------------------------------
create table quantops.retention_policies (
  id           bigint generated always as identity primary key,
  name         text not null unique check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  kind         text not null check (kind in ('max_age', 'keep_newest', 'retired_strategy')),
  strategy     text check (strategy is null or (pg_catalog.length(strategy) between 1 and 128 and strategy !~ '[[:cntrl:]]')),
  max_age      interval check (max_age > interval '0'),
  keep_newest  integer check (keep_newest >= 0),
  enabled      boolean not null default true,
  created_at   timestamptz not null default pg_catalog.now(),
  updated_at   timestamptz not null default pg_catalog.now(),
  updated_by   text not null default quantops._caller_role(),
  constraint retention_policies_max_age_kind_check check ((kind = 'max_age') = (max_age is not null)),
  constraint retention_policies_keep_newest_kind_check check ((kind = 'keep_newest') = (keep_newest is not null)),
  constraint retention_policies_strategy_kind_check check (kind <> 'retired_strategy' or strategy is not null)
);
comment on table quantops.retention_policies is
  'what quantops.prune() moves to quantops.signal_embeddings_archive: rows older than max_age (by as_of), all but the newest keep_newest per (strategy, symbol), or every row of a retired strategy; strategy null = every strategy';

-- One run per policy at a time. The watermark (as_of, id) and the cutoff are written in the same
-- transaction as each batch's move, so a crash resumes exactly where the last commit left off.
create table quantops.prune_state (
  policy_id    bigint primary key references quantops.retention_policies (id) on delete cascade,
  cutoff       timestamptz,
  wm_as_of     timestamptz not null default '-infinity',
  wm_id        bigint not null default 0,
  moved        bigint not null default 0,
  batches      integer not null default 0,
  started_at   timestamptz not null default pg_catalog.clock_timestamp(),
  finished_at  timestamptz
);

alter table quantops.retention_policies enable row level security;
alter table quantops.prune_state enable row level security;
create policy readable on quantops.retention_policies for select using (true);
create policy readable on quantops.prune_state for select using (true);
select pg_catalog.pg_extension_config_dump('quantops.retention_policies', '');
select pg_catalog.pg_extension_config_dump('quantops.prune_state', '');

insert into quantops.jobs (name, run_every, description) values
  ('prune', interval '1 hour', 'move rows that the retention policies retire to quantops.signal_embeddings_archive, in batches'),
  ('maintain-index', interval '30 minutes', 'measure the IVFFlat index''s health; rebuild it concurrently when it needs it');

-- Creates or changes a retention policy.
create function quantops.set_retention(name text, kind text, strategy text default null,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.set_retention(text, text, text, interval, integer, boolean)', 'service_role');

create function quantops.drop_retention(name text) returns boolean
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
insert into quantops.routine_grants (routine, tier) values ('quantops.drop_retention(text)', 'service_role');

-- The ids a policy retires next: at most batch_size, after the watermark, locked, skipping rows
-- that another transaction holds (a concurrent writer never waits on the prune).
create function quantops._prune_pick(p quantops.retention_policies, st quantops.prune_state, batch_size integer)
returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if p.kind = 'max_age' then
    return query
      select s.id from quantops.signal_embeddings s
       where s.as_of < st.cutoff and (p.strategy is null or s.strategy = p.strategy)
         and (s.as_of, s.id) > (st.wm_as_of, st.wm_id)
       order by s.as_of, s.id
       limit batch_size
       for update of s skip locked;
  elsif p.kind = 'retired_strategy' then
    return query
      select s.id from quantops.signal_embeddings s
       where s.strategy = p.strategy and (s.as_of, s.id) > (st.wm_as_of, st.wm_id)
       order by s.as_of, s.id
       limit batch_size
       for update of s skip locked;
  else
    return query
      select s.id from quantops.signal_embeddings s
       where s.id in (
         select r.id from (
           select x.id, x.as_of,
                  pg_catalog.row_number() over (partition by x.strategy, x.symbol order by x.as_of desc, x.id desc) rn
             from quantops.signal_embeddings x
            where p.strategy is null or x.strategy = p.strategy) r
          where r.rn > p.keep_newest and (r.as_of, r.id) > (st.wm_as_of, st.wm_id)
          order by r.as_of, r.id
          limit batch_size)
       order by s.as_of, s.id
       for update of s skip locked;
  end if;
end
$$;

-- Starts a run of each enabled policy (or the one named) that has none in progress; a run that a
-- crash interrupted is resumed from its watermark. Returns the number of runs ready.
create function quantops._prune_start(policy text default null) returns integer
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
insert into quantops.routine_grants (routine, tier) values ('quantops._prune_start(text)', 'service_role');

-- Moves one batch (at most batch_size rows) of the first unfinished run, in the caller's
-- transaction: DELETE ... RETURNING into the archive and the watermark, all in one commit.
create function quantops.prune_batch(policy text default null, batch_size integer default 1000)
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
insert into quantops.routine_grants (routine, tier) values ('quantops.prune_batch(text, integer)', 'service_role');

-- The dry run: what each enabled policy (or the one named) would move now.
create function quantops.prune_plan(policy text default null)
returns table (retention_policy text, kind text, strategy text, rows_to_move bigint, oldest timestamptz, newest timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  p quantops.retention_policies;
begin
  if prune_plan.policy is not null and not exists (select 1 from quantops.retention_policies r where r.name = prune_plan.policy) then
    raise exception 'retention policy "%" does not exist', prune_plan.policy using errcode = '42704';
  end if;
  for p in select * from quantops.retention_policies r
            where r.enabled and (prune_plan.policy is null or r.name = prune_plan.policy) order by r.id loop
    retention_policy := p.name; kind := p.kind; strategy := p.strategy;
    if p.kind = 'max_age' then
      select count(*), min(s.as_of), max(s.as_of) into rows_to_move, oldest, newest
        from quantops.signal_embeddings s
       where s.as_of < pg_catalog.now() - p.max_age and (p.strategy is null or s.strategy = p.strategy);
    elsif p.kind = 'retired_strategy' then
      select count(*), min(s.as_of), max(s.as_of) into rows_to_move, oldest, newest
        from quantops.signal_embeddings s where s.strategy = p.strategy;
    else
      select count(*), min(r.as_of), max(r.as_of) into rows_to_move, oldest, newest from (
        select x.as_of, pg_catalog.row_number() over (partition by x.strategy, x.symbol order by x.as_of desc, x.id desc) rn
          from quantops.signal_embeddings x where p.strategy is null or x.strategy = p.strategy) r
       where r.rn > p.keep_newest;
    end if;
    return next;
  end loop;
end
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.prune_plan(text)', 'service_role');

-- Brings archived rows back (by id, or every row archived with a reason), at most max_rows.
-- A live row with the same natural key stops it with unique_violation, and nothing moves.
create function quantops.restore_archived(ids bigint[] default null, reason text default null,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.restore_archived(bigint[], text, integer)', 'service_role');

-- The job_runs row of a prune started from SQL: null run = start one; a report = it succeeded.
-- Only the backend that started a run may update it (a direct call cannot rewrite another's).
create function quantops._prune_record(run bigint, moved bigint, report jsonb) returns bigint
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
insert into quantops.routine_grants (routine, tier) values ('quantops._prune_record(bigint, bigint, jsonb)', 'service_role');

-- The index's state for a prune's report: no sampling (lists, live rows, churn since the build,
-- the last measured balance and drift); null when there is no index yet.
create function quantops._prune_health() returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return quantops._index_state();
end
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops._prune_health()', 'service_role');

-- Runs the retention policies now, one committed transaction per batch:
--   call quantops.prune();                      -- every enabled policy
--   call quantops.prune(dry_run => true);       -- what would move, nothing moves
-- pg_cron: select cron.schedule('quantops-prune', '17 * * * *', 'call quantops.prune()');
-- A procedure (not a function) so that it can commit between batches; call it outside BEGIN.
create procedure quantops.prune(dry_run boolean default false, batch_size integer default 1000,
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
insert into quantops.routine_grants (routine, tier) values ('quantops.prune(boolean, integer, bigint, text, jsonb)', 'service_role');
