-- The demo's maintenance cycle and report. Runs as postgres on the demo cluster.
\pset footer off
\echo
\echo '================================================================================'
\echo ' quantops demo'
\echo '================================================================================'

\echo
\echo '-- 1. The data the Supabase seed loaded ----------------------------------------'
select strategy, count(*) as signals, count(distinct symbol) as symbols,
       min(as_of)::date as first, max(as_of)::date as last,
       count(*) filter (where embedding is null) as awaiting_embedding
from quantops.signal_embeddings group by strategy order by strategy;

select strategy, count(*) as backtests, round(avg(sharpe)::numeric, 2) as avg_sharpe,
       round(max(max_drawdown)::numeric, 3) as worst_drawdown, sum(trades) as trades
from quantops.backtest_results group by strategy order by avg_sharpe desc;

\echo
\echo '-- 2. A maintenance cycle -------------------------------------------------------'
\echo 'a flow announces itself, the audit job runs, the flow reports back:'
select quantops.log_flow_run('scheduled-backtest-runner', run_id => 'dddddddd-0000-4000-8000-00000000de00',
       parameters => '{"window": "2025", "service_role_key": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"}') as flow_run_id \gset
select quantops.run_job('verify-audit') ->> 'status' as verify_audit_job;
select quantops.log_flow_run('scheduled-backtest-runner', phase => 'finish', run_id => :'flow_run_id',
       outcome => 'ok', result => '{"backtests": 25}') is not null as flow_finished;

\echo 'an agent, through PostgREST as user ada, logs a tool call pair:'
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', '{"sub": "11111111-1111-4111-8111-111111111111", "role": "authenticated"}', true) is not null as jwt_claims_set;
select quantops.log_tool_call('search_signal_memory', arguments => '{"query": "momentum breakouts in NVDA", "k": 5}',
       agent => 'langgraph-planner') as call_id \gset
select count(*) as signals_ada_can_see from quantops.signal_embeddings;
select quantops.log_tool_call('search_signal_memory', phase => 'finish', call_id => :'call_id', outcome => 'ok',
       result => '{"matches": 5}') is not null as call_finished;
commit;

\echo
\echo '-- 3. quantops.status() ---------------------------------------------------------'
select jsonb_pretty(quantops.status() - 'jobs') as status;
select j->>'job' as job, j->>'enabled' as enabled, j->>'run_every' as every,
       j->'last_run'->>'status' as last_status, j->'last_run'->>'runner' as last_runner,
       j->'last_run'->>'rows' as rows_checked
from jsonb_array_elements(quantops.status()->'jobs') j;

\echo
\echo '-- 4. The audit trail ------------------------------------------------------------'
select stream, seq, actor_role, coalesce(actor::text, '-') as actor, action, outcome, left(args::text, 70) as args
from quantops.audit_log order by at, stream, seq;
\echo 'hash chains:'
select * from quantops.verify_audit();
\echo
\echo 'tamper test (rolled back): the table owner disables the append-only trigger and rewrites a row'
begin;
alter table quantops.audit_log disable trigger audit_log_append_only;
update quantops.audit_log set outcome = 'error' where stream = 'flow_runs' and seq = 2;
select stream, valid, first_bad_seq, problem from quantops.verify_audit('flow_runs');
rollback;
select stream, valid from quantops.verify_audit('flow_runs');
