//! Hostile environments: every quantops function that a role below the extension's owner may
//! execute, called by that role with a search_path that puts a schema of the caller's first
//! (operators, functions, an aggregate and domains named like the ones quantops uses, each of
//! which records the role it runs as), temporary domains and views named like quantops' types
//! and tables (PostgreSQL searches pg_temp first for those unless a path pins it last), and a
//! forged `role` claim. The list of functions comes from pg_proc, so a new function is covered
//! without anyone remembering; only a sample argument may need an entry in `sample()`.
//!
//! Asserted, for anon, an authenticated user, service_role and Supabase's postgres:
//!   * no hostile object ever ran as a role other than the caller (a counter that only that
//!     case bumps, a sequence, so it survives the rollback of the call that bumped it);
//!   * the answer (or the SQLSTATE) of every stable or immutable function is the same as in a
//!     clean session; a volatile one fails or succeeds the same way;
//!   * anything anon may execute writes nothing.
//!
//! On the code before issue 11 (5499203) the owner's read of a flag ran the caller's `=`.

mod common;

use common::*;
use postgres::Client;
use std::collections::BTreeMap;

const EVIL_PATH: &str = "evil, pg_catalog, extensions, public";

/// Stable functions whose answer changes with the clock.
const CHANGES_WITH_TIME: &[&str] = &["status"];

/// Creates schema evil as Supabase's postgres (any role with CREATE on the database could):
/// logging copies of pg_catalog's operators and of commonly called functions, with the same
/// argument types, so each one is an exact match that wins over pg_catalog's when evil comes
/// first; domains named like pg_catalog's types; a count(*) aggregate.
fn create_evil_schema() {
    let mut c = studio();
    c.batch_execute(
        r#"
        drop schema if exists evil cascade;
        create schema evil;
        grant usage on schema evil to public;
        create sequence evil.calls;
        create sequence evil.escalations;
        grant usage, update, select on sequence evil.calls, evil.escalations to public;
        create table evil.fake (key text, id bigint, name text, definition jsonb, active boolean);
        insert into evil.fake values ('x', 1, 'x', '{}', true);
        grant select on evil.fake to public;
        create function evil.note() returns void language plpgsql as $f$
        begin
          perform pg_catalog.nextval('evil.calls');
          if current_user::pg_catalog.text operator(pg_catalog.<>) pg_catalog.current_setting('evil.caller', true) then
            perform pg_catalog.nextval('evil.escalations');
            raise warning 'hostile code ran as % for caller %', current_user, pg_catalog.current_setting('evil.caller', true);
          end if;
        end $f$;
        create function evil.note_bool() returns boolean language plpgsql as $f$
        begin perform evil.note(); return true; end $f$;
        create function evil.count_sf(pg_catalog.int8) returns pg_catalog.int8 language plpgsql as $f$
        begin perform evil.note(); return $1 operator(pg_catalog.+) 1; end $f$;
        create aggregate evil.count(*) (sfunc = evil.count_sf, stype = pg_catalog.int8, initcond = '0');
        do $d$
        declare
          r record;
          n integer := 0;
          args text;
          call text;
        begin
          -- operators: every pg_catalog operator between these types, shadowed
          for r in
            select o.oprname, o.oprleft::regtype::text l, o.oprright::regtype::text rt, o.oprresult::regtype::text res,
                   o.oprcode::regproc::text code
              from pg_operator o
             where o.oprnamespace = 'pg_catalog'::regnamespace and o.oprkind = 'b'
               and o.oprname in ('=', '<>', '<', '<=', '>', '>=', '||', '->', '->>', '#>>', '+', '-', '*', '/', '~', '!~', '@>', '&&', '?')
               and o.oprleft::regtype::text in ('text', 'name', 'bigint', 'integer', 'smallint', 'oid', 'uuid', 'boolean', 'jsonb',
                 'bytea', 'timestamp with time zone', 'interval', 'double precision', 'numeric', 'tstzrange', '"char"', 'real')
               and o.oprright::regtype::text in ('text', 'name', 'bigint', 'integer', 'smallint', 'oid', 'uuid', 'boolean', 'jsonb',
                 'bytea', 'timestamp with time zone', 'interval', 'double precision', 'numeric', 'tstzrange', '"char"', 'real', 'text[]')
          loop
            n := n + 1;
            execute format('create function evil.op_%s(a %s, b %s) returns %s language plpgsql strict as $f$ '
                           'begin perform evil.note(); return %s(a, b); end $f$',
                           n, r.l, r.rt, r.res, case when r.code like 'pg_catalog.%' then r.code else 'pg_catalog.' || r.code end);
            execute format('create operator evil.%s (leftarg = %s, rightarg = %s, function = evil.op_%s)', r.oprname, r.l, r.rt, n);
          end loop;
          -- operators between two values of one type where pg_catalog has none: an unknown literal
          -- on one side (x -> 'key', now() + '1 day') makes PostgreSQL look for exactly (T, T)
          -- first, on the whole path, so one of these would win over pg_catalog's (T, text)
          for r in
            select o.name, t.typ
              from unnest(array['=', '<>', '<', '<=', '>', '>=', '||', '->', '->>', '#>', '#>>', '+', '-', '*', '/', '@>', '<@', '?', '~']) o(name),
                   unnest(array['text', 'name', 'bigint', 'integer', 'uuid', 'boolean', 'jsonb', 'bytea', 'timestamp with time zone',
                                'interval', 'double precision', 'numeric', 'tstzrange']) t(typ)
             where not exists (select 1 from pg_operator x where x.oprnamespace = 'pg_catalog'::regnamespace and x.oprname = o.name
                                 and x.oprleft = t.typ::regtype and x.oprright = t.typ::regtype)
          loop
            n := n + 1;
            execute format('create function evil.op_%s(a %s, b %s) returns %s language plpgsql as $f$ '
                           'begin perform evil.note(); return null; end $f$', n, r.typ, r.typ, r.typ);
            execute format('create operator evil.%s (leftarg = %s, rightarg = %s, function = evil.op_%s)', r.name, r.typ, r.typ, n);
          end loop;
          -- functions quantops' SQL calls, with concrete argument and result types
          for r in
            select p.proname, p.oid,
                   array(select format_type(t, null) from unnest(p.proargtypes) t) as types,
                   format_type(p.prorettype, null) as ret
              from pg_proc p
             where p.pronamespace = 'pg_catalog'::regnamespace and p.prokind = 'f' and not p.proretset
               and p.proname in ('now', 'clock_timestamp', 'lower', 'upper', 'length', 'left', 'replace', 'jsonb_typeof',
                 'to_jsonb', 'jsonb_build_object', 'current_setting', 'set_config', 'pg_backend_pid', 'gen_random_uuid',
                 'to_regclass', 'has_table_privilege', 'pg_has_role', 'quote_ident', 'array_length', 'cardinality',
                 'date_part', 'round', 'sqrt', 'make_interval', 'encode', 'decode', 'isempty', 'upper_inf', 'lower_inf',
                 'tstzrange', 'int8range', 'jsonb_set', 'array_to_string', 'format', 'sha256', 'nextval', 'pg_notify',
                 'jsonb_object_keys', 'array_position', 'array_ndims', 'numeric_float8', 'text', 'btrim', 'lpad', 'repeat')
               and not exists (select 1 from unnest(p.proargtypes) t where t in ('anyelement'::regtype, 'anyarray'::regtype,
                 'anynonarray'::regtype, '"any"'::regtype, 'internal'::regtype, 'anycompatible'::regtype, 'anycompatiblearray'::regtype,
                 'cstring'::regtype, 'anyrange'::regtype, 'anymultirange'::regtype))
               and p.prorettype not in ('anyelement'::regtype, 'anyarray'::regtype, 'internal'::regtype, 'anyrange'::regtype,
                 'anycompatible'::regtype, 'anycompatiblearray'::regtype, 'cstring'::regtype)
               and p.provariadic = 0
          loop
            n := n + 1;
            select string_agg(format('a%s %s', i, t), ', ' order by i), string_agg(format('a%s', i), ', ' order by i)
              into args, call from unnest(r.types) with ordinality u(t, i);
            if r.ret = 'void' then
              execute format('create function evil.%I(%s) returns void language plpgsql as $f$ '
                             'begin perform evil.note(); perform pg_catalog.%I(%s); end $f$',
                             r.proname, coalesce(args, ''), r.proname, coalesce(call, ''));
            else
              execute format('create function evil.%I(%s) returns %s language plpgsql as $f$ '
                             'begin perform evil.note(); return pg_catalog.%I(%s); end $f$',
                             r.proname, coalesce(args, ''), r.ret, r.proname, coalesce(call, ''));
            end if;
          end loop;
        end
        $d$;
        -- types of pg_catalog's, shadowed by domains whose CHECK runs evil code
        create domain evil.text as pg_catalog.text check (evil.note_bool());
        create domain evil.jsonb as pg_catalog.jsonb check (evil.note_bool());
        create domain evil.uuid as pg_catalog.uuid check (evil.note_bool());
        create domain evil.bytea as pg_catalog.bytea check (evil.note_bool());
        create domain evil.timestamptz as pg_catalog.timestamptz check (evil.note_bool());
        create domain evil.int8 as pg_catalog.int8 check (evil.note_bool());
        create domain evil.float8 as pg_catalog.float8 check (evil.note_bool());
        "#,
    )
    .unwrap();
}

/// What a hostile session adds in its own temporary schema: domains named like the types a
/// function might name without a schema, and views named like quantops' tables.
const TEMP_OBJECTS: &str = r#"
    create domain pg_temp.text as pg_catalog.text check (evil.note_bool());
    create domain pg_temp.jsonb as pg_catalog.jsonb check (evil.note_bool());
    create domain pg_temp.uuid as pg_catalog.uuid check (evil.note_bool());
    create domain pg_temp.bytea as pg_catalog.bytea check (evil.note_bool());
    create domain pg_temp.timestamptz as pg_catalog.timestamptz check (evil.note_bool());
    create domain pg_temp.int8 as pg_catalog.int8 check (evil.note_bool());
    create domain pg_temp.float8 as pg_catalog.float8 check (evil.note_bool());
    create domain pg_temp.name as pg_catalog.name check (evil.note_bool());
    create domain pg_temp.oid as pg_catalog.oid check (evil.note_bool());
    create domain pg_temp.regclass as pg_catalog.regclass check (evil.note_bool());
    create temp view flags as select * from evil.fake where evil.note_bool();
    create temp view settings as select * from evil.fake where evil.note_bool();
    create temp view embedders as select * from evil.fake where evil.note_bool();
    create temp view signal_embeddings as select * from evil.fake where evil.note_bool();
    create temp view jobs as select * from evil.fake where evil.note_bool();
    create temp view models as select * from evil.fake where evil.note_bool();
    create temp view model_aliases as select * from evil.fake where evil.note_bool();
    create temp view audit_log as select * from evil.fake where evil.note_bool();
    create temp view pg_extension as select * from evil.fake where evil.note_bool();
    create temp view pg_class as select * from evil.fake where evil.note_bool();
"#;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Caller {
    Anon,
    User,
    ServiceRole,
    Postgres,
}

impl Caller {
    fn role(self) -> &'static str {
        match self {
            Caller::Anon => "anon",
            Caller::User => "authenticated",
            Caller::ServiceRole => "service_role",
            Caller::Postgres => "postgres",
        }
    }
    fn connect(self) -> Client {
        match self {
            Caller::Postgres => studio(),
            _ => connect("authenticator"),
        }
    }
    /// The claims as PostgREST sets them; a hostile caller also claims to be service_role.
    fn claims(self, forged: bool) -> String {
        let role = if forged { "service_role" } else { self.role() };
        match self {
            Caller::User => format!(r#"{{"sub":"{USER_A}","role":"{role}"}}"#),
            _ => format!(r#"{{"role":"{role}"}}"#),
        }
    }
}

/// One quantops function: its signature, name, volatility, argument names and types.
struct Func {
    sig: String,
    name: String,
    volatile: bool,
    args: Vec<(String, String)>,
}

fn functions(c: &mut Client) -> Vec<Func> {
    c.query(
        "select p.oid::regprocedure::text, p.proname::text, p.provolatile = 'v', \
                coalesce(p.proargnames[1:p.pronargs], array_fill(''::text, array[p.pronargs])), \
                array(select format_type(t, null) from unnest(p.proargtypes) t) \
           from pg_proc p \
          where p.pronamespace = 'quantops'::regnamespace and p.prokind = 'f' and p.prorettype <> 'trigger'::regtype \
          order by 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let names: Vec<String> = r.get(3);
        let types: Vec<String> = r.get(4);
        Func { sig: r.get(0), name: r.get(1), volatile: r.get(2), args: names.into_iter().zip(types).collect() }
    })
    .collect()
}

/// A sample argument, every name in it qualified (the hostile path is in force when it is read).
fn sample(f: &str, arg: &str, ty: &str, dims: i32) -> String {
    match (f, arg) {
        ("flag_enabled" | "evaluate_flag" | "require_flag", "key") => format!("'hostile.{f}'"),
        (_, "job") => "'verify-audit'".into(),
        (_, "model") => "'hostile-model'".into(),
        (_, "alias") => "'production'".into(),
        (_, "version") if ty == "integer" => "1".into(),
        ("log_tool_call", "tool") | ("log_flow_run", "flow") => "'hostile'".into(),
        ("log_tool_call" | "log_flow_run", "phase") => "'start'".into(),
        ("log_tool_call" | "log_flow_run", "outcome") => "null".into(),
        ("backtest_metrics", _) if ty == "integer" => "252".into(),
        ("backtest_metrics", _) if ty == "double precision" => "0.0".into(),
        ("index_health" | "_index_health", "sample_rows") => "100".into(),
        ("index_health" | "_index_health" | "maintain_index" | "_maintain_index", "target") => "null".into(),
        ("maintain_index" | "_maintain_index", "dry_run") => "true".into(),
        ("refresh_embeddings", _) => "1".into(),
        _ => match ty {
            "text" => "'x'::pg_catalog.text".into(),
            "jsonb" => "'{}'::pg_catalog.jsonb".into(),
            "integer" => "1".into(),
            "bigint" => "1::pg_catalog.int8".into(),
            "boolean" => "false".into(),
            "double precision" => "0.5::pg_catalog.float8".into(),
            "uuid" => format!("'{USER_A}'::pg_catalog.uuid"),
            "timestamp with time zone" => "'2026-01-01 00:00+00'::pg_catalog.timestamptz".into(),
            "interval" => "'1 day'::pg_catalog.interval".into(),
            "regclass" => "'quantops.signal_embeddings'::pg_catalog.regclass".into(),
            "oid" => "0::pg_catalog.oid".into(),
            "bytea" => "'\\x00'::pg_catalog.bytea".into(),
            "double precision[]" => "'{0.01,-0.02,0.03,0.01}'::pg_catalog.float8[]".into(),
            "text[]" => "'{x}'::pg_catalog.text[]".into(),
            "bigint[]" => "'{1}'::pg_catalog.int8[]".into(),
            "vector" => format!("pg_catalog.array_fill(0.1::pg_catalog.float4, array[{dims}])::extensions.vector"),
            "quantops.audit_log" => "(select a from quantops.audit_log a order by a.stream, a.seq limit 1)".into(),
            other => panic!("no sample value for an argument of type {other} ({f}.{arg}): add one to sample()"),
        },
    }
}

/// Calls `f` as `who` in one transaction, rolled back: the answer as text, or the SQLSTATE.
/// With `hostile`, the search_path puts evil first and the claims are forged.
fn call(c: &mut Client, who: Caller, f: &Func, dims: i32, hostile: bool) -> Result<String, String> {
    let args: Vec<String> = f.args.iter().map(|(n, t)| sample(&f.name, n, t, dims)).collect();
    let sql = format!(
        "select pg_catalog.array_to_string(pg_catalog.array_agg(r::pg_catalog.text), '|') from quantops.{}({}) r",
        f.name,
        args.join(", ")
    );
    let mut tx = c.transaction().unwrap();
    tx.execute("select pg_catalog.set_config('evil.caller', $1, true)", &[&who.role()]).unwrap();
    if who != Caller::Postgres {
        tx.execute(
            "select pg_catalog.set_config('role', $1, true), pg_catalog.set_config('request.jwt.claims', $2, true)",
            &[&who.role(), &who.claims(hostile)],
        )
        .unwrap();
    }
    if hostile {
        tx.execute("select pg_catalog.set_config('search_path', $1, true)", &[&EVIL_PATH]).unwrap();
    }
    let r = match tx.query_one(sql.as_str(), &[]) {
        Ok(row) => Ok(row.get::<_, Option<String>>(0).unwrap_or_default()),
        Err(e) => Err(e.code().map(|c| c.code().to_string()).unwrap_or_else(|| e.to_string())),
    };
    let _ = tx.rollback();
    r
}

fn counter(name: &str) -> i64 {
    admin().query_one(&format!("select last_value - (not is_called)::int from evil.{name}"), &[]).unwrap().get(0)
}

#[test]
fn no_caller_environment_reaches_another_role() {
    let mut a = admin();
    let dims: i32 = a.query_one("select embedding_dims from quantops.settings", &[]).unwrap().get(0);
    // a flag per flag function, so each one's hostile session reads it uncached
    for f in ["flag_enabled", "evaluate_flag", "require_flag"] {
        a.execute(
            "select quantops.set_flag($1, '{\"environments\": {\"production\": true}, \"rules\": [{\"constraints\": [{\"attribute\": \"user_id\", \"op\": \"in\", \"values\": [\"u1\"]}]}]}')",
            &[&format!("hostile.{f}")],
        )
        .unwrap();
    }
    create_evil_schema();
    let funcs = functions(&mut a);
    assert!(funcs.len() > 40, "pg_proc lists {} quantops functions", funcs.len());
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    let mut differences = Vec::new();
    for who in [Caller::Anon, Caller::User, Caller::ServiceRole, Caller::Postgres] {
        let mut clean = who.connect();
        let mut hostile = who.connect();
        hostile.batch_execute(TEMP_OBJECTS).unwrap();
        for f in &funcs {
            let may: bool =
                a.query_one("select has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')", &[&who.role(), &f.sig]).unwrap().get(0);
            if !may {
                continue;
            }
            *checked.entry(who.role()).or_default() += 1;
            let before = counter("escalations");
            let want = call(&mut clean, who, f, dims, false);
            let got = call(&mut hostile, who, f, dims, true);
            assert_eq!(counter("escalations"), before, "{} calling {} ran hostile code as another role", who.role(), f.sig);
            // a volatile function, and status() (heartbeat ages, next runs), answer differently
            // from one call to the next by nature: there the outcome must be the same
            let by_outcome = f.volatile || CHANGES_WITH_TIME.contains(&f.name.as_str());
            let same = if by_outcome { want.is_ok() == got.is_ok() && want.as_ref().err() == got.as_ref().err() } else { want == got };
            if !same {
                differences.push(format!("{} {}: clean {:?}, hostile {:?}", who.role(), f.sig, want, got));
            }
        }
    }
    assert!(differences.is_empty(), "a hostile environment changed answers:\n{}", differences.join("\n"));
    // the one procedure (it commits, so it has no SET clause and runs under its caller's path):
    // a dry run in a transaction, and a real run, each as service_role and as postgres
    for who in [Caller::ServiceRole, Caller::Postgres] {
        let clean = {
            let mut c = who.connect();
            let mut tx = c.transaction().unwrap();
            if who != Caller::Postgres {
                tx.execute("select pg_catalog.set_config('role', $1, true)", &[&who.role()]).unwrap();
            }
            let r: serde_json::Value = tx.query_one("call quantops.prune(dry_run => true)", &[]).unwrap().get(0);
            tx.rollback().unwrap();
            r
        };
        let mut h = who.connect();
        h.batch_execute(TEMP_OBJECTS).unwrap();
        if who != Caller::Postgres {
            h.batch_execute(&format!("set role {}", who.role())).unwrap();
        }
        h.batch_execute(&format!("set evil.caller = '{}'; set search_path = {EVIL_PATH}", who.role())).unwrap();
        let before = counter("escalations");
        let dry: serde_json::Value = h.query_one("call quantops.prune(dry_run => true)", &[]).unwrap().get(0);
        assert_eq!(dry, clean, "{} prune(dry_run) under a hostile path", who.role());
        let real: serde_json::Value = h.query_one("call quantops.prune(max_rows => 1)", &[]).unwrap().get(0);
        assert!(real["moved"].is_number(), "{real}");
        assert_eq!(counter("escalations"), before, "{} calling prune ran hostile code as another role", who.role());
        *checked.entry(who.role()).or_default() += 1;
    }
    // the hostile objects are real: the suite's own probe meets them
    let mut probe = studio();
    probe.batch_execute("set evil.caller = 'postgres'; set search_path = evil, pg_catalog").unwrap();
    let before = counter("calls");
    probe.query_one("select 'a'::pg_catalog.text = 'a'::pg_catalog.text", &[]).unwrap();
    assert!(counter("calls") > before, "evil's = is not reached by a caller that puts evil first");
    assert_eq!(counter("escalations"), 0);
    // every role was checked on what it may execute
    for (role, at_least) in [("anon", 3), ("authenticated", 10), ("service_role", 40), ("postgres", 42)] {
        assert!(checked.get(role).copied().unwrap_or(0) >= at_least, "{role} checked on {:?} functions", checked.get(role));
    }
    studio().batch_execute("drop schema evil cascade").unwrap();
}

/// Anything anon may execute writes nothing: each call, as PostgREST makes it for anon, leaves
/// every table's insert/update/delete counters of the transaction at zero.
#[test]
fn anon_writes_nothing() {
    let mut a = admin();
    let dims: i32 = a.query_one("select embedding_dims from quantops.settings", &[]).unwrap().get(0);
    // the flags the sample arguments name exist, so a sampled evaluation would write
    for f in ["flag_enabled", "evaluate_flag", "require_flag"] {
        a.execute("select quantops.set_flag($1, '{\"environments\": {\"production\": true}}')", &[&format!("hostile.{f}")]).unwrap();
    }
    let funcs = functions(&mut a);
    // the positive control: the same sampled evaluation by an authenticated user does write
    {
        let mut c = connect("authenticator");
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', '{{\"sub\":\"{USER_A}\",\"role\":\"authenticated\"}}', true); \
             set local quantops.flag_exposure_sample = 1"
        ))
        .unwrap();
        tx.query("select * from quantops.evaluate_flag('hostile.evaluate_flag')", &[]).unwrap();
        tx.batch_execute("reset role").unwrap();
        let writes: i64 = tx
            .query_one("select coalesce(sum(n_tup_ins), 0)::bigint from pg_stat_xact_all_tables where relname = 'flag_exposures'", &[])
            .unwrap()
            .get(0);
        assert_eq!(writes, 1, "the control: an authenticated, sampled evaluation writes its exposure");
        tx.rollback().unwrap();
    }
    let mut n = 0;
    for f in &funcs {
        let may: bool = a.query_one("select has_function_privilege('anon', $1::text::regprocedure, 'EXECUTE')", &[&f.sig]).unwrap().get(0);
        if !may {
            continue;
        }
        n += 1;
        let args: Vec<String> = f.args.iter().map(|(nm, t)| sample(&f.name, nm, t, dims)).collect();
        // the call as PostgREST makes it, then the transaction's own write counters: in a backend
        // of its own (PostgreSQL 15 flushes a backend's counters lazily, so the pending ones of an
        // earlier transaction of the same backend would show here too)
        let mut c = connect("authenticator");
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(
            "select set_config('role', 'anon', true), set_config('request.jwt.claims', '{\"role\":\"anon\"}', true); \
             set local quantops.flag_exposure_sample = 1",
        )
        .unwrap();
        tx.batch_execute("savepoint call").unwrap();
        if tx.query(&format!("select * from quantops.{}({})", f.name, args.join(", ")), &[]).is_err() {
            tx.batch_execute("rollback to savepoint call").unwrap();
        }
        tx.batch_execute("reset role").unwrap();
        let writes: i64 = tx
            .query_one("select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint from pg_stat_xact_all_tables", &[])
            .unwrap()
            .get(0);
        assert_eq!(writes, 0, "anon calling {} wrote {writes} rows", f.sig);
        let _ = tx.rollback();
    }
    assert!(n >= 4, "anon may execute {n} functions");
}
