-- The scheduled-vector-prune flow, inside Postgres: pg_cron calls quantops.prune() (a batch per
-- transaction) every hour. Retention policies are data: add them with quantops.set_retention(),
-- after a look at quantops.prune_plan(). The quantops worker also runs the 'prune' and
-- 'maintain-index' jobs on their own schedule (quantops.jobs); either path alone is enough.
select cron.schedule('quantops-prune', '23 * * * *', $$call quantops.prune()$$);
