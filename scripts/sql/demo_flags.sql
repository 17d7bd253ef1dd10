-- The demo, part 5: a feature flag gates a strategy; on for 25 % of users. Runs as postgres.
\pset footer off
\echo
\echo '-- 10. Feature flags: strategy.momentum_v2 on for 25 % of users -------------------'
select key, definition -> 'rules' -> 0 -> 'rollout' as rollout from jsonb_to_record(
  quantops.set_flag('strategy.momentum_v2', '{
     "description": "momentum v2 gated before production",
     "environments": {"local": true, "staging": true, "production": true},
     "rules": [{"name": "quarter-of-users", "rollout": {"percentage": 25, "stickiness": "user_id"}}]}'))
  as f(key text, definition jsonb);
\echo 'who gets it (Unleash-compatible buckets: murmur3 of "strategy.momentum_v2:<user_id>"):'
select u as user_id, quantops.flag_enabled('strategy.momentum_v2', jsonb_build_object('user_id', u)) as momentum_v2,
       (select variant from quantops.evaluate_flag('strategy.momentum_v2', jsonb_build_object('user_id', u))) as variant,
       (select reason from quantops.evaluate_flag('strategy.momentum_v2', jsonb_build_object('user_id', u))) as reason
from (values ('11111111-1111-4111-8111-111111111111'), ('22222222-2222-4222-8222-222222222222'),
             ('ada'), ('grace'), ('edsger'), ('barbara'), ('donald'), ('frances'), ('ken'), ('leslie')) v(u);
select count(*) filter (where quantops.flag_enabled('strategy.momentum_v2', jsonb_build_object('user_id', g))) as users_on,
       count(*) as users, round(100.0 * count(*) filter (where quantops.flag_enabled('strategy.momentum_v2',
         jsonb_build_object('user_id', g))) / count(*), 2) as percent
from generate_series(1, 10000) g;
\echo 'a flow asks before running the strategy for a user outside the rollout (55000):'
\set ON_ERROR_STOP 0
select quantops.require_flag('strategy.momentum_v2', '{"user_id": "grace"}');
\set ON_ERROR_STOP 1
\echo 'the kill switch: off for everyone at once, in the same transaction as whatever it gates:'
select quantops.kill_flag('strategy.momentum_v2') is not null as killed;
select count(*) filter (where quantops.flag_enabled('strategy.momentum_v2', jsonb_build_object('user_id', g))) as users_on
from generate_series(1, 10000) g;
select quantops.kill_flag('strategy.momentum_v2', false) is not null as revived;
\echo 'every change, audited with the value before and after:'
select seq, action, detail -> 'before' -> 'kill_switch' as kill_switch_before, detail -> 'after' -> 'kill_switch' as kill_switch_after
from quantops.audit_log where args ->> 'key' = 'strategy.momentum_v2' order by seq;
