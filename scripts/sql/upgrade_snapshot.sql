-- Every row of every quantops table, as a count and a digest per table (rows in a fixed order),
-- plus the audit chains' verdicts. The worker's own bookkeeping (workers, job_runs) changes by
-- itself and is left out; the check runs with the worker's jobs off. routine_grants is the
-- extension's declaration, not data: describe_extension.sql compares it with a fresh install's.
-- Tables an update adds are compared by upgrade_check.sh only from the next update on.
\set ON_ERROR_STOP 1
select string_agg(format('select %L as tbl, count(*) as n, md5(coalesce(string_agg(x::text, %L order by x::text), %L)) as digest from quantops.%I x',
                         c.relname, E'\x1f', '', c.relname), ' union all ' order by c.relname) || ' order by 1'
  from pg_class c
 where c.relnamespace = 'quantops'::regnamespace and c.relkind in ('r', 'p') and c.relname not in ('workers', 'job_runs', 'routine_grants', 'jobs')
\gexec
-- jobs: the rows of the jobs named in :jobs (those that existed before the update; an update may
-- add jobs of its own), every row without it
\if :{?jobs}
select 'jobs' as tbl, count(*) as n, md5(coalesce(string_agg(x::text, E'\x1f' order by x::text), '')) as digest
  from quantops.jobs x where x.name = any (pg_catalog.string_to_array(:'jobs', ','));
\else
select 'jobs' as tbl, count(*) as n, md5(coalesce(string_agg(x::text, E'\x1f' order by x::text), '')) as digest from quantops.jobs x;
\endif
select 'verify_audit ' || stream || ' ' || valid || ' ' || rows from quantops.verify_audit() order by stream;
