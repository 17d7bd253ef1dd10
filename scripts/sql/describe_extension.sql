-- Every object of the quantops extension, one sorted line each, with what defines it: the
-- upgrade check compares this for an upgraded and a fresh installation. (pg_dump prints only
-- `CREATE EXTENSION` for an extension's objects, so its output cannot tell two versions apart.)
with members as (
  select d.classid, d.objid
    from pg_depend d join pg_extension e on e.oid = d.refobjid
   where d.refclassid = 'pg_extension'::regclass and e.extname = 'quantops' and d.deptype = 'e'
),
rels as (
  select c.oid, c.relname, c.relkind from pg_class c
   where c.relnamespace = 'quantops'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S')
),
lines as (
  -- routines: definition, volatility, security, settings, privileges
  select 'routine ' || p.oid::regprocedure::text || E'\n' || pg_get_functiondef(p.oid)
         || ' acl=' || coalesce(p.proacl::text, 'default') as line
    from pg_proc p join members m on m.classid = 'pg_proc'::regclass and m.objid = p.oid
  union all
  -- relations: kind, options, row level security, privileges
  select format('relation %s kind=%s rls=%s force=%s options=%s acl=%s', r.relname, r.relkind, c.relrowsecurity,
                c.relforcerowsecurity, coalesce(c.reloptions::text, '{}'), coalesce(c.relacl::text, 'default'))
    from rels r join pg_class c on c.oid = r.oid
  union all
  -- columns (in order) with type, nullability, default, generation, column privileges
  select format('column %s.%s #%s %s notnull=%s default=%s identity=%s generated=%s acl=%s', c.relname, a.attname, a.attnum,
                format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''),
                a.attidentity, a.attgenerated, coalesce(a.attacl::text, 'default'))
    from pg_attribute a join rels c on c.oid = a.attrelid
    left join pg_attrdef ad on ad.adrelid = a.attrelid and ad.adnum = a.attnum
   where a.attnum > 0 and not a.attisdropped
  union all
  select format('constraint %s.%s %s', c.relname, k.conname, pg_get_constraintdef(k.oid))
    from pg_constraint k join rels c on c.oid = k.conrelid
  union all
  select format('index %s', pg_get_indexdef(i.indexrelid))
    from pg_index i join rels c on c.oid = i.indrelid
  union all
  select format('trigger %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    from pg_trigger t join rels c on c.oid = t.tgrelid where not t.tgisinternal
  union all
  select format('policy %s.%s cmd=%s permissive=%s roles=%s using=%s check=%s', p.tablename, p.policyname, p.cmd,
                p.permissive, p.roles, coalesce(p.qual, ''), coalesce(p.with_check, ''))
    from pg_policies p where p.schemaname = 'quantops'
  union all
  select format('view %s %s', c.relname, pg_get_viewdef(c.oid)) from rels c where c.relkind in ('v', 'm')
  union all
  select format('type %s %s', t.typname, t.typtype)
    from pg_type t join members m on m.classid = 'pg_type'::regclass and m.objid = t.oid
  union all
  -- tables whose rows pg_dump keeps (pg_extension_config_dump)
  select 'config ' || x::regclass::text
    from pg_extension e, unnest(e.extconfig) x where e.extname = 'quantops'
  union all
  select 'schema quantops acl=' || coalesce(n.nspacl::text, 'default') from pg_namespace n where n.nspname = 'quantops'
  union all
  select format('job %s every=%s enabled=%s', j.name, j.run_every, j.enabled) from quantops.jobs j
  union all
  -- who may execute what, as declared (the acl of each routine above is what was granted)
  select format('grant %s tier=%s', g.routine, g.tier) from quantops.routine_grants g
)
select line from lines order by line;
