-- quantops finalize: runs last in CREATE EXTENSION quantops, after the Rust functions exist.

-- SECURITY DEFINER only where a caller must do something its role cannot do directly, and then
-- with an empty search_path (Supabase lint 0011); every name inside is schema-qualified.
alter function quantops.configure(integer, integer, text) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.log_tool_call(text, text, uuid, jsonb, text, jsonb, text) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.log_flow_run(text, text, uuid, jsonb, text, jsonb) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.run_job(text) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.register_embedder(text, text, integer, jsonb, boolean) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.set_embedder(text, integer) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.refresh_embeddings(bigint, bigint, bigint) security definer set search_path = pg_catalog, pg_temp;
alter function quantops.sweep_embeddings() security definer set search_path = pg_catalog, pg_temp;
alter function quantops.retry_failed(text, text) security definer set search_path = pg_catalog, pg_temp;

alter function quantops._index_health(oid, boolean, integer, integer, double precision, integer) security definer set search_path = pg_catalog, pg_temp;
alter function quantops._maintain_index(oid, boolean, boolean) security definer set search_path = pg_catalog, pg_temp;

-- The SQL faces of the index functions take a regclass: an index, or a table with one.
create function quantops.index_health(target regclass default null, recall boolean default false,
                                      k integer default 10, queries integer default 50,
                                      target_recall double precision default null,
                                      sample_rows integer default null)
returns jsonb
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$ select quantops._index_health(target::oid, recall, k, queries, target_recall, sample_rows) $$;
comment on function quantops.index_health(regclass, boolean, integer, integer, double precision, integer) is
  'health of an IVFFlat index (quantops'' own by default): churn, lists, balance and drift from its own centers, recall@k on demand; recorded in quantops.index_health_log';

create function quantops.maintain_index(target regclass default null, force boolean default false,
                                        dry_run boolean default false)
returns jsonb
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$ select quantops._maintain_index(target::oid, force, dry_run) $$;
comment on function quantops.maintain_index(regclass, boolean, boolean) is
  'measure the IVFFlat index and queue a rebuild when it needs one; the worker runs it with REINDEX/CREATE INDEX CONCURRENTLY, never blocking writes';

-- The other Rust functions run with an empty search_path too: their SQL is fully qualified.
alter function quantops.backtest_metrics(double precision[], integer, double precision) set search_path = pg_catalog, pg_temp;
alter function quantops._index_state() security definer set search_path = pg_catalog, pg_temp;
alter function quantops.evaluate_flag(text, jsonb) set search_path = pg_catalog, pg_temp;
alter function quantops.require_flag(text, jsonb) set search_path = pg_catalog, pg_temp;
alter function quantops._flag_check(text, jsonb) set search_path = pg_catalog, pg_temp;
alter function quantops._flags_invalidate() set search_path = pg_catalog, pg_temp;
alter function quantops._gates_passed(text) set search_path = pg_catalog, pg_temp;
alter function quantops._gates_consume(text) set search_path = pg_catalog, pg_temp;
alter function quantops.verify_audit(text) set search_path = pg_catalog, pg_temp;
alter function quantops.status() set search_path = pg_catalog, pg_temp;
alter function quantops.embedding_input_hash(text, integer, text, text, jsonb, double precision[], text, text[]) set search_path = pg_catalog, pg_temp;
alter function quantops._wake_worker() set search_path = pg_catalog, pg_temp;
alter function quantops._audit_digest(bytea, text) set search_path = pg_catalog, pg_temp;
alter function quantops.redact_secrets(jsonb) set search_path = pg_catalog, pg_temp;



-- Default deny: nobody but the owner runs anything until granted.
revoke execute on all routines in schema quantops from public;
select quantops.grant_roles();
