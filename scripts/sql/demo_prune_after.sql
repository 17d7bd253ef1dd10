-- The demo, part 3 (end): the rebuild the worker ran, and the health after it.
\pset footer off
select id, status, method, lists, round(extract(epoch from finished_at - started_at)::numeric, 2) as seconds,
       health_after ->> 'drift' as drift_after, health_after ->> 'balance' as balance_after, error
from quantops.index_builds where method in ('reindex_concurrently', 'create_concurrently_swap') order by id;
select job, status, rows, runner, round(extract(epoch from finished_at - started_at)::numeric * 1000, 1) as ms
from quantops.job_runs where job in ('prune', 'maintain-index') order by id;
