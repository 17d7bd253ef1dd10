-- The embedding column's IVFFlat index and the search that uses it: the index's builds (and
-- rebuild requests), its health over time, its rebuild thresholds, and agent memory search.
-- configure(), index_health() and maintain_index() are Rust (src/index/); the worker runs the
-- rebuilds. Runs after embedding.sql.

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
insert into quantops.routine_grants (routine, tier) values ('quantops.match_signals(@vector@, integer, jsonb, timestamptz)', 'authenticated');
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
insert into quantops.routine_grants (routine, tier) values ('quantops._text_list(jsonb, text)', 'authenticated');
