-- The audit trail: start/finish pairs, redaction, the chain, append-only.
begin;
create temp table ids as
  select quantops.log_flow_run('supabase-embedding-refresh', run_id => 'aaaaaaaa-0000-4000-8000-000000000001', parameters => '{"batch": 500, "service_role_key": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.c2lnbmF0dXJlMTIz"}') as id;
select quantops.log_flow_run('supabase-embedding-refresh', phase => 'finish', run_id => (select id from ids),
                             outcome => 'ok', result => '{"rows": 500}') = (select id from ids) as same_id;
select action, outcome, args, detail, actor_role
  from quantops.audit_log where call_id = (select id from ids) order by seq;
select stream, valid, problems from quantops.verify_audit('flow_runs');
-- finishing twice, finishing with a bad outcome, an unknown phase
savepoint s;
select quantops.log_flow_run('supabase-embedding-refresh', phase => 'finish', run_id => (select id from ids), outcome => 'ok');
rollback to s;
select quantops.log_flow_run('x', phase => 'finish', run_id => (select id from ids), outcome => 'maybe');
rollback to s;
select quantops.log_flow_run('x', phase => 'pause');
rollback to s;
-- no one updates or deletes audit rows
update quantops.audit_log set outcome = 'ok' where call_id = (select id from ids);
rollback to s;
delete from quantops.audit_log where call_id = (select id from ids);
rollback to s;
select quantops.redact_secrets('{"symbol": "AAPL", "headers": {"Authorization": "Bearer abc"}, "password": "p", "n": [1, {"api_key": "k"}]}');
rollback;
