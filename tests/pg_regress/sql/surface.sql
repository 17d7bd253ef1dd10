-- The security surface, the same in every shape of PostgreSQL: nothing executable by PUBLIC;
-- SECURITY DEFINER only with a pinned search_path (pg_catalog first, pg_temp last); every other
-- routine pinned too, except the helpers PostgreSQL inlines (every name in them qualified), the
-- C hot path flag_enabled (it pins its own reads) and the prune procedure (it commits, which a
-- SET clause forbids; every name in it qualified).
begin;
select count(*) as executable_by_public
  from pg_proc p left join lateral aclexplode(p.proacl) a on true
 where p.pronamespace = 'quantops'::regnamespace and (p.proacl is null or a.grantee = 0);
select p.oid::regprocedure as security_definer_unpinned
  from pg_proc p
 where p.pronamespace = 'quantops'::regnamespace and p.prosecdef
   and not exists (select 1 from unnest(p.proconfig) c where c like 'search\_path=pg\_catalog, %pg\_temp');
select p.proname as unpinned, p.prokind, p.provolatile, l.lanname
  from pg_proc p join pg_language l on l.oid = p.prolang
 where p.pronamespace = 'quantops'::regnamespace
   and not exists (select 1 from unnest(p.proconfig) c where c like 'search\_path=pg\_catalog, %pg\_temp')
 order by 1;
-- an empty search_path is not enough: PostgreSQL then searches pg_temp first for types
select count(*) as empty_search_path
  from pg_proc p, unnest(p.proconfig) c
 where p.pronamespace = 'quantops'::regnamespace and c in ('search_path=""', 'search_path=');
-- the gates' token is no one's to set: not even the owner's role by a direct call outside promote()
select has_function_privilege('public', 'quantops._gates_passed(text)', 'EXECUTE') as public_may_vouch;
rollback;
