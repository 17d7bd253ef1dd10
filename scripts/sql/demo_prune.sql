-- The demo, part 3: vector prune and the IVFFlat index's health. Runs as postgres.
\pset footer off
\echo
\echo '-- 7. Vector prune: a retention policy, its dry run, the batched move -------------'
select name as policy, kind, max_age from jsonb_to_record(
  quantops.set_retention('signals-older-than-500-days', 'max_age', max_age => interval '500 days'))
  as p(name text, kind text, max_age text);
\echo 'dry run (nothing moves):'
select retention_policy, kind, rows_to_move, oldest::date, newest::date from quantops.prune_plan();
select count(*) as live_before from quantops.signal_embeddings \gset
call quantops.prune(batch_size => 250) \gset
select (:'report'::jsonb) ->> 'moved' as moved, (:'report'::jsonb) ->> 'batches' as batches,
       (:'report'::jsonb) ->> 'duration_ms' as duration_ms, (:'report'::jsonb) ->> 'run_id' as job_run;
select :live_before as live_before,
       (select count(*) from quantops.signal_embeddings) as live_after,
       (select count(*) from quantops.signal_embeddings_archive) as archived,
       (select count(*) from quantops.signal_embeddings) + (select count(*) from quantops.signal_embeddings_archive)
         = :live_before as nothing_lost;

\echo
\echo '-- 8. Index health: centers read from the index pages, a sample assigned to them --'
select quantops.index_health(recall => true, queries => 40) as h \gset
select (:'h'::jsonb) ->> 'rows' as rows, (:'h'::jsonb) ->> 'lists' as lists,
       (:'h'::jsonb) ->> 'recommended_lists' as recommended, (:'h'::jsonb) ->> 'balance' as balance,
       (:'h'::jsonb) ->> 'drift' as drift, (:'h'::jsonb) ->> 'baseline' as drift_baseline,
       (:'h'::jsonb) -> 'recall' ->> 'recall' as recall_at_10,
       (:'h'::jsonb) -> 'recall' ->> 'probes' as probes,
       (:'h'::jsonb) -> 'recall' ->> 'probes_for_target' as probes_for_95pct;
select r as why from jsonb_array_elements_text((:'h'::jsonb) -> 'reasons') r;
\echo 'maintain_index(): measure, decide, queue the rebuild for the worker:'
select quantops.maintain_index() as m \gset
select (:'m'::jsonb) ->> 'rebuild' as rebuild, (:'m'::jsonb) ->> 'method' as method,
       (:'m'::jsonb) ->> 'lists' as lists, (:'m'::jsonb) ->> 'request_id' as request;
select s as statement from jsonb_array_elements_text((:'m'::jsonb) -> 'statements') s;
