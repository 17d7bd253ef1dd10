-- Security: a PostgREST-shaped request as an authenticated user and as anon.
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', '{"sub": "33333333-3333-4333-8333-333333333333", "role": "authenticated"}', true) is not null as claims_set;
select quantops.uid();
insert into quantops.signal_embeddings (strategy, symbol, as_of) values ('regress', 'MSFT', '2026-02-01')
  returning owner, strategy, symbol;
select count(*) as visible_rows from quantops.signal_embeddings;
savepoint s;
insert into quantops.signal_embeddings (strategy, symbol, as_of, owner)
  values ('regress', 'MSFT', '2026-02-02', '44444444-4444-4444-8444-444444444444');
rollback to s;
select * from quantops.job_runs;
rollback to s;
select quantops.status();
rollback to s;
select quantops.configure(dims => 384);
rollback to s;
select set_config('role', 'anon', true), set_config('request.jwt.claims', '{"role": "anon"}', true) is not null as claims_set;
savepoint a;
select count(*) from quantops.signal_embeddings;
rollback to a;
select quantops.log_tool_call('t');
rollback to a;
select quantops.uid() is null as anon_has_no_uid;
rollback;
