-- Vector prune (retention policies, lossless batched moves to the archive, restore), the
-- IVFFlat index's builds and health history, and agent memory search.
-- Runs after embedding.sql; the Rust functions it calls at run time are created after it.

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

-- ---------------------------------------------------------------------------------------------
-- The IVFFlat index: its builds (and rebuild requests), its health over time, its thresholds
-- ---------------------------------------------------------------------------------------------
create table quantops.index_builds (
  id                 bigint generated always as identity primary key,
  index_name         text not null,
  relfilenode        bigint,
  status             text not null check (status in ('queued', 'running', 'succeeded', 'failed', 'observed')),
  method             text check (method in ('create', 'reindex_concurrently', 'create_concurrently_swap', 'observed')),
  lists              integer,
  requested_by       text not null default quantops._caller_role(),
  requested_at       timestamptz not null default pg_catalog.clock_timestamp(),
  started_at         timestamptz,
  finished_at        timestamptz,
  reasons            jsonb not null default '[]'::jsonb,
  statements         text[],
  error              text,
  rows_at_build      bigint,
  tup_ins_at_build   bigint,
  tup_del_at_build   bigint,
  mean_distance_at_build double precision,
  balance_at_build   double precision,
  health_before      jsonb,
  health_after       jsonb
);
create index index_builds_index_idx on quantops.index_builds (index_name, id desc);
-- one request in flight per index
create unique index index_builds_one_pending on quantops.index_builds (index_name) where status in ('queued', 'running');

create table quantops.index_health_log (
  id             bigint generated always as identity primary key,
  measured_at    timestamptz not null default pg_catalog.clock_timestamp(),
  index_name     text not null,
  health         jsonb not null
);
create index index_health_log_index_idx on quantops.index_health_log (index_name, measured_at desc);

-- Thresholds of quantops.maintain_index(). One row; service_role may update it.
create table quantops.index_policy (
  id                boolean primary key default true check (id),
  max_balance       double precision not null default 1.5 check (max_balance >= 1),
  max_drift         double precision not null default 1.15 check (max_drift >= 1),
  max_lists_factor  double precision not null default 2 check (max_lists_factor >= 1),
  max_churn         double precision not null default 1 check (max_churn > 0),
  min_interval      interval not null default interval '1 hour' check (min_interval >= interval '0'),
  target_recall     double precision not null default 0.95 check (target_recall > 0 and target_recall <= 1),
  sample_rows       integer not null default 5000 check (sample_rows between 100 and 1000000)
);
insert into quantops.index_policy default values;

-- the probes that the last recall measurement found for the target recall; null = sqrt(lists)
alter table quantops.settings add column search_probes integer check (search_probes between 1 and 32768);

alter table quantops.index_builds enable row level security;
alter table quantops.index_health_log enable row level security;
alter table quantops.index_policy enable row level security;
create policy readable on quantops.index_builds for select using (true);
create policy readable on quantops.index_health_log for select using (true);
create policy readable on quantops.index_policy for select using (true);
select pg_catalog.pg_extension_config_dump('quantops.index_builds', '');
select pg_catalog.pg_extension_config_dump('quantops.index_health_log', '');
select pg_catalog.pg_extension_config_dump('quantops.index_policy', '');

-- ---------------------------------------------------------------------------------------------
-- Agent memory search: the Supabase match_documents pattern, under the caller's RLS
-- ---------------------------------------------------------------------------------------------
create function quantops.match_signals(query_embedding vector, match_count integer default 10,
                                       filter jsonb default '{}'::jsonb, as_of timestamptz default null)
returns table (id bigint, strategy text, symbol text, signal_as_of timestamptz, similarity double precision,
               distance double precision, features jsonb, rationale text, tags text[])
language plpgsql
-- STABLE: it only reads (its set_config calls are local to the transaction), so PostgREST sends
-- it as a read-only GET, which a read replica can serve
stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  v_dims     integer;
  v_metric   text;
  v_lists    integer;
  v_probes   integer;
  v_strat    text[];
  v_sym      text[];
  v_filter   jsonb := coalesce(filter, '{}'::pg_catalog.jsonb);
  k          text;
  v_vs       text;
  v_op       text;
begin
  if query_embedding is null then
    raise exception 'query_embedding must not be null' using errcode = '22004';
  end if;
  if match_count is null or match_count < 1 or match_count > 1000 then
    raise exception 'match_count must be between 1 and 1000, not %', coalesce(match_count::text, 'null') using errcode = '22023';
  end if;
  if pg_catalog.jsonb_typeof(v_filter) operator(pg_catalog.<>) 'object'::pg_catalog.text then
    raise exception 'filter must be a JSON object, not %', pg_catalog.jsonb_typeof(v_filter) using errcode = '22023';
  end if;
  for k in select pg_catalog.jsonb_object_keys(v_filter) loop
    if not (k operator(pg_catalog.=) 'strategy'::pg_catalog.text or k operator(pg_catalog.=) 'symbol'::pg_catalog.text) then
      raise exception 'unknown filter key "%"', k using errcode = '22023', hint = 'filter keys: strategy, symbol';
    end if;
  end loop;
  v_strat := quantops._text_list(v_filter operator(pg_catalog.->) 'strategy'::pg_catalog.text, 'strategy');
  v_sym := quantops._text_list(v_filter operator(pg_catalog.->) 'symbol'::pg_catalog.text, 'symbol');
  select st.embedding_dims, st.index_metric, st.index_lists, st.search_probes into v_dims, v_metric, v_lists, v_probes
    from quantops.settings st;
  if v_dims is null then
    raise exception 'quantops is not configured' using errcode = '55000', hint = 'run quantops.configure(dims => ...) first';
  end if;
  if pg_catalog.array_length(query_embedding::real[], 1) operator(pg_catalog.<>) v_dims then
    raise exception 'query_embedding has % dimensions, not %', pg_catalog.array_length(query_embedding::real[], 1), v_dims
      using errcode = '22000';
  end if;
  -- the probes that reach the target recall (quantops.index_health(recall => true) finds them);
  -- the iterative scan goes on probing when filters drop rows, so filters never return too few
  perform pg_catalog.set_config('ivfflat.probes',
    coalesce(v_probes, greatest(1, pg_catalog.round(pg_catalog.sqrt(coalesce(v_lists, 1)::pg_catalog.float8))::integer))::text, true);
  perform pg_catalog.set_config('ivfflat.iterative_scan', 'relaxed_order', true);
  -- pgvector's operators, qualified by the schema pgvector lives in now (found by its oid, so a
  -- renamed schema is followed and a schema that took the old name is not), in a statement built
  -- here: no search_path decides which operator runs, and no column dependency pins the type
  -- that configure() sets
  select n.nspname into v_vs from pg_catalog.pg_extension e
    join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) e.extnamespace
   where e.extname operator(pg_catalog.=) 'vector'::pg_catalog.name;
  v_op := case v_metric when 'l2' then '<->' when 'ip' then '<#>' else '<=>' end;
  -- the rows come from the statement below; the OUT variables stay unused (said so for linters,
  -- which cannot see through a dynamic statement)
  id := null; strategy := null; symbol := null; signal_as_of := null; similarity := null; distance := null;
  features := null; rationale := null; tags := null;
  return query execute pg_catalog.format(
    'select d.id, d.strategy, d.symbol, d.as_of, %s, d.dist, d.features, d.rationale, d.tags from ('
    '  select s.id, s.strategy, s.symbol, s.as_of, s.features, s.rationale, s.tags, '
    '         (s.embedding operator(%I.%s) $1)::pg_catalog.float8 as dist '
    '    from quantops.signal_embeddings s '
    '   where s.embedding is not null and ($3 is null or s.strategy operator(pg_catalog.=) any ($3)) '
    '     and ($4 is null or s.symbol operator(pg_catalog.=) any ($4)) and ($5 is null or s.as_of operator(pg_catalog.<=) $5) '
    '   order by s.embedding operator(%I.%s) $1 limit $2) d '
    'order by d.dist, d.id',
    case v_metric
      when 'l2' then '1::pg_catalog.float8 operator(pg_catalog./) (1::pg_catalog.float8 operator(pg_catalog.+) d.dist)'
      when 'ip' then 'operator(pg_catalog.-) d.dist'
      else '1::pg_catalog.float8 operator(pg_catalog.-) d.dist' end,
    v_vs, v_op, v_vs, v_op)
  using query_embedding, match_count, v_strat, v_sym, match_signals.as_of;
end
$$;
comment on function quantops.match_signals(vector, integer, jsonb, timestamptz) is
  'agent memory search (Supabase RPC): the match_count signals nearest to query_embedding that the caller may read, filtered by strategy and symbol, known by as_of (signal as_of <= as_of: no look-ahead)';

-- A filter value: a string or an array of strings.
create function quantops._text_list(v jsonb, what text) returns text[]
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if v is null or pg_catalog.jsonb_typeof(v) = 'null' then
    return null;
  elsif pg_catalog.jsonb_typeof(v) = 'string' then
    return array[v #>> '{}'];
  elsif pg_catalog.jsonb_typeof(v) = 'array'
        and not exists (select 1 from pg_catalog.jsonb_array_elements(v) e where pg_catalog.jsonb_typeof(e) <> 'string') then
    return array(select pg_catalog.jsonb_array_elements_text(v));
  end if;
  raise exception 'filter "%" must be a string or an array of strings', what using errcode = '22023';
end
$$;
