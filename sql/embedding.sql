-- Embedding refresh: embedders, the queue of stale rows, dead letters, history.
-- Runs after bootstrap.sql; the Rust functions it calls at run time are created after it.

create table quantops.embedders (
  name        text not null check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  version     integer not null check (version >= 1),
  kind        text not null check (kind in ('features', 'series', 'hashing', 'http', 'model')),
  dims        integer not null check (dims between 1 and 2000),
  params      jsonb not null default '{}'::jsonb,
  active      boolean not null default false,
  created_at  timestamptz not null default pg_catalog.now(),
  created_by  text not null default quantops._caller_role(),
  primary key (name, version)
);
-- exactly one embedder is the configured one
create unique index embedders_one_active on quantops.embedders ((true)) where active;
comment on table quantops.embedders is
  'named, versioned embedders; a version never changes: quantops.register_embedder() adds the next one, quantops.set_embedder() activates it';

create function quantops._embedders_immutable() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if (new.kind, new.dims, new.params, new.name, new.version) is distinct from
     (old.kind, old.dims, old.params, old.name, old.version) then
    raise exception 'embedder "%" version % cannot change', old.name, old.version
      using errcode = '55000',
            hint = 'register a new version with quantops.register_embedder(), then quantops.set_embedder()';
  end if;
  return new;
end
$$;
create trigger embedders_immutable before update on quantops.embedders
  for each row execute function quantops._embedders_immutable();

-- One row per stale signal: many changes before a refresh are one unit of work.
create table quantops.embedding_queue (
  signal_id         bigint primary key references quantops.signal_embeddings (id) on delete cascade,
  enqueued_at       timestamptz not null default pg_catalog.clock_timestamp(),
  attempts          integer not null default 0,
  next_try_at       timestamptz not null default '-infinity',
  lease_until       timestamptz,
  leased_by         integer,
  leased_hash       bytea,
  last_error        text,
  last_error_class  text check (last_error_class in ('retryable', 'permanent'))
) with (fillfactor = 50);
-- half of each page is left free (0.2.0): a lease rewrites its rows (lease_until, leased_by,
-- attempts, none indexed), and with room on the page that is a HOT update, with no index entries
-- batches are taken in arrival order
create index embedding_queue_order_idx on quantops.embedding_queue (enqueued_at, signal_id);
-- rows that failed before are retried in next_try_at order (few; 0.2.0)
create index embedding_queue_retry_idx on quantops.embedding_queue (next_try_at, signal_id) where last_error_class is not null;

-- Dead letters: rows that could not be embedded, with the error, the attempts and the last try.
create table quantops.embedding_failures (
  signal_id         bigint primary key references quantops.signal_embeddings (id) on delete cascade,
  embedder          text not null,
  embedder_version  integer not null,
  input_hash        bytea,
  error_class       text not null check (error_class in ('permanent', 'retries_exhausted')),
  error             text not null,
  attempts          integer not null,
  first_failed_at   timestamptz not null default pg_catalog.now(),
  last_tried_at     timestamptz not null default pg_catalog.now()
);

-- Replaced embeddings, so a backtest can see a row's embedding as it was at time T.
create table quantops.signal_embedding_history (
  signal_id         bigint not null,
  owner             uuid,
  embedding         vector not null,
  embedder          text not null,
  embedder_version  text,
  input_hash        bytea,
  valid_from        timestamptz not null,
  valid_to          timestamptz not null,
  primary key (signal_id, valid_from),
  check (valid_to >= valid_from)
);

alter table quantops.embedders enable row level security;
alter table quantops.embedding_queue enable row level security;
alter table quantops.embedding_failures enable row level security;
alter table quantops.signal_embedding_history enable row level security;
create policy readable on quantops.embedders for select using (true);
create policy readable on quantops.embedding_queue for select using (true);
create policy readable on quantops.embedding_failures for select using (true);
create policy own_rows on quantops.signal_embedding_history for select using (owner = quantops.uid());

select pg_catalog.pg_extension_config_dump('quantops.embedders', '');
select pg_catalog.pg_extension_config_dump('quantops.embedding_queue', '');
select pg_catalog.pg_extension_config_dump('quantops.embedding_failures', '');
select pg_catalog.pg_extension_config_dump('quantops.signal_embedding_history', '');

-- Enqueue a signal when an input that the active embedder reads changes. An update of other
-- columns (and the refresh's own write of the embedding) causes no work.
create function quantops._embedding_enqueue() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  select e.kind into k from quantops.embedders e where e.active;
  if k is null then
    return null;
  end if;
  if tg_op = 'UPDATE' then
    if not (case k
        when 'features' then new.features is distinct from old.features
        when 'series' then new.series is distinct from old.series
        else new.rationale is distinct from old.rationale or new.tags is distinct from old.tags
          or new.strategy is distinct from old.strategy or new.symbol is distinct from old.symbol
      end) then
      return null;
    end if;
  end if;
  -- a new input earns fresh attempts; an in-flight lease stays, and its write-back will see
  -- that the input changed and leave the row stale
  insert into quantops.embedding_queue (signal_id) values (new.id)
    on conflict (signal_id) do update
      set attempts = 0, next_try_at = '-infinity', last_error = null, last_error_class = null;
  delete from quantops.embedding_failures f where f.signal_id = new.id;
  perform quantops._wake_worker();
  return null;
end
$$;
create trigger signal_embeddings_enqueue
  after insert or update of features, series, rationale, tags, strategy, symbol on quantops.signal_embeddings
  for each row execute function quantops._embedding_enqueue();

-- The scheduler also sweeps for rows a trigger missed (triggers off, logical replication).
insert into quantops.jobs (name, run_every, description) values
  ('sweep-embeddings', interval '1 hour', 'enqueue every stale row that the enqueue trigger missed');

-- A signal's embedding as it was at a time: the current one if it was made by then, else the one
-- it replaced that was valid then (no look-ahead for backtests). Runs under the caller's RLS.
create function quantops.embedding_asof(signal_id bigint, at timestamptz)
returns table (embedding vector, embedder text, embedder_version text, input_hash bytea,
               valid_from timestamptz, valid_to timestamptz)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select s.embedding, s.embedder, s.embedder_version, s.input_hash, s.embedded_at, null::timestamptz
    from quantops.signal_embeddings s
   where s.id = embedding_asof.signal_id and s.embedding is not null and s.embedded_at <= embedding_asof.at
  union all
  select h.embedding, h.embedder, h.embedder_version, h.input_hash, h.valid_from, h.valid_to
    from quantops.signal_embedding_history h
   where h.signal_id = embedding_asof.signal_id and h.valid_from <= embedding_asof.at and embedding_asof.at < h.valid_to
  limit 1
$$;
insert into quantops.routine_grants (routine, tier) values ('quantops.embedding_asof(bigint, timestamptz)', 'authenticated');

-- The view quantops.embedding_status is defined next to quantops._embedding_http_state() (src/embedding/sql.rs).
