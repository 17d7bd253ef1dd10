-- quantops finalize: runs last in CREATE EXTENSION quantops, after the Rust functions exist.

-- SECURITY DEFINER only where a caller must do something its role cannot do directly, and then
-- with an empty search_path (Supabase lint 0011); every name inside is schema-qualified.
alter function quantops.configure(integer, integer, text) security definer set search_path = '';
alter function quantops.log_tool_call(text, text, uuid, jsonb, text, jsonb, text) security definer set search_path = '';
alter function quantops.log_flow_run(text, text, uuid, jsonb, text, jsonb) security definer set search_path = '';
alter function quantops.run_job(text) security definer set search_path = '';
alter function quantops.register_embedder(text, text, integer, jsonb, boolean) security definer set search_path = '';
alter function quantops.set_embedder(text, integer) security definer set search_path = '';
alter function quantops.refresh_embeddings(bigint, bigint, bigint) security definer set search_path = '';
alter function quantops.sweep_embeddings() security definer set search_path = '';
alter function quantops.retry_failed(text, text) security definer set search_path = '';

-- The other Rust functions run with an empty search_path too: their SQL is fully qualified.
alter function quantops.verify_audit(text) set search_path = '';
alter function quantops.status() set search_path = '';
alter function quantops.embedding_input_hash(text, integer, text, text, jsonb, double precision[], text, text[]) set search_path = '';
alter function quantops._wake_worker() set search_path = '';

-- Default deny: nobody but the owner runs anything until granted.
revoke execute on all functions in schema quantops from public;
select quantops.grant_roles();
