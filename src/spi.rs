//! The one place that builds SQL text. A statement is a `&'static str` template of quantops' own,
//! with `{}` filled by [`Sql`] fragments, which only this module makes: quoted identifiers,
//! qualified names, quoted literals, integers. Values from callers are always bound as $n.

use pgrx::prelude::*;

/// Quotes an identifier the way `quote_ident` does, always (never trusts the input to be plain).
fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        if c == '"' {
            s.push('"');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Quotes a string literal the way `quote_literal` does (doubles quotes and backslashes, E'' form
/// when there is a backslash).
fn quote_literal(v: &str) -> String {
    let body = v.replace('\'', "''");
    if v.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A piece of SQL text that may go into a statement: made only here, by quoting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sql(String);

impl Sql {
    /// An identifier, always quoted.
    pub fn ident(name: &str) -> Sql {
        Sql(quote_ident(name))
    }
    /// `schema.name`, both quoted.
    pub fn qualified(schema: &str, name: &str) -> Sql {
        Sql(format!("{}.{}", quote_ident(schema), quote_ident(name)))
    }
    /// `name` in the schema of `schema` (a fragment itself), e.g. pgvector's `vector` type.
    pub fn in_schema(schema: &Sql, name: &str) -> Sql {
        Sql(format!("{}.{}", schema.0, quote_ident(name)))
    }
    /// A string literal, quoted.
    pub fn literal(v: &str) -> Sql {
        Sql(quote_literal(v))
    }
    /// An integer literal.
    pub fn int(n: i64) -> Sql {
        Sql(n.to_string())
    }
    /// Fragments joined by a separator of quantops' own.
    pub fn join(parts: &[Sql], sep: &'static str) -> Sql {
        Sql(parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(sep))
    }
    /// A fragment of quantops' own text (an operator, a keyword): never a value.
    pub fn fixed(text: &'static str) -> Sql {
        Sql(text.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A statement: the template with each `{}` replaced, in order, by a fragment. The template is
/// quantops' own text (`'static`); a count that does not match is a bug in quantops.
pub fn statement(template: &'static str, parts: &[&Sql]) -> String {
    let pieces: Vec<&str> = template.split("{}").collect();
    assert_eq!(pieces.len(), parts.len() + 1, "quantops: a statement template does not match its fragments: {template}");
    let mut out = String::with_capacity(template.len() + parts.iter().map(|p| p.0.len()).sum::<usize>());
    for (i, piece) in pieces.iter().enumerate() {
        out.push_str(piece);
        if let Some(p) = parts.get(i) {
            out.push_str(&p.0);
        }
    }
    out
}

/// The schema (quoted) where pgvector's `vector` type lives, e.g. `"extensions"`; `None` only if
/// pgvector is not installed (it cannot be dropped while quantops, which requires it, exists).
pub fn vector_schema() -> Option<Sql> {
    read_one::<String>(
        "select n.nspname::pg_catalog.text from pg_catalog.pg_extension e \
         join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) e.extnamespace \
         where e.extname operator(pg_catalog.=) 'vector'::pg_catalog.name",
        &[],
    )
    .unwrap_or_else(|e| failed("looking up pgvector's schema", e).report_error())
    .map(|s| Sql::ident(&s))
}

/// Runs one of quantops' own fixed statements. A PostgreSQL ERROR inside it propagates with its
/// own SQLSTATE (pgrx turns it into a panic that unwinds to the function boundary). SPI returns an
/// error value only when it is misused (not connected, a wrong argument count, a statement type
/// SPI refuses), which for a fixed statement is a bug in quantops: reported as XX000 with a hint
/// to report it, naming the statement's purpose (see [`failed`]).
pub fn run(what: &str, sql: &str, args: &[pgrx::datum::DatumWithOid]) {
    if let Err(e) = Spi::run_with_args(sql, args) {
        failed(what, e).report_error();
    }
}

/// Raising an [`ErrorReport`] where no `Result` can carry it.
pub trait ReportError {
    fn report_error(self) -> !;
}

impl ReportError for pgrx::pg_sys::panic::ErrorReport {
    fn report_error(self) -> ! {
        self.report(pgrx::PgLogLevel::ERROR);
        unreachable!("an ERROR does not return")
    }
}

/// The search_path every SQL statement of quantops runs under when it runs as another role (the
/// worker, an owner switch): pg_catalog first, the session's temporary schema last. With an empty
/// search_path PostgreSQL would search `pg_temp` *first* for tables and types, so a caller's
/// temporary domain named `text` could run its CHECK expression as the owner.
pub const PINNED_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Restores what `pinned`/`as_owner` changed, on the normal path and while a Rust panic (or a
/// PostgreSQL ERROR turned into one) unwinds. On an error that aborts the (sub)transaction,
/// PostgreSQL itself also restores both: the user id and the GUC nest level.
struct Restore {
    nest: i32,
    user: Option<(pg_sys::Oid, i32)>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: the nest level and the saved user id/context were taken by this very guard in
        // this backend, on its main thread; restoring them is what PostgreSQL's own code does
        // after a user switch (index_build, RI checks).
        unsafe {
            if let Some((user, ctx)) = self.user {
                pg_sys::SetUserIdAndSecContext(user, ctx);
            }
            // true, as PostgreSQL ends a function's SET clause
            pg_sys::AtEOXact_GUC(true, self.nest);
        }
    }
}

fn pin_search_path() -> i32 {
    // SAFETY: called on the backend's main thread inside a transaction; set_config_option with
    // GUC_ACTION_SAVE at a new nest level is how PostgreSQL applies a function's SET clause.
    unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest
    }
}

/// Runs `f` with search_path pinned to [`PINNED_SEARCH_PATH`], as a function's `SET search_path`
/// clause would; the caller's value is back afterwards.
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore { nest: pin_search_path(), user: None };
    f()
}

/// Runs `f` as the role `owner` (the extension's owner), the way a SECURITY DEFINER function runs,
/// and more strictly: search_path pinned, inside a security-restricted operation (no SET ROLE, no
/// temporary objects, no cursors that outlive it). Nothing of the caller's environment reaches
/// the SQL `f` runs.
pub fn as_role<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut user, mut ctx) = (pg_sys::InvalidOid, 0i32);
    // SAFETY: main thread, inside a transaction. The path is pinned first, then the user switched,
    // and one guard restores both (in the reverse order) on every path.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut ctx) };
    let _restore = Restore { nest: pin_search_path(), user: Some((user, ctx)) };
    // SAFETY: as above: the path is pinned and the guard restores the user; SetUserIdAndSecContext
    // only switches the ids this backend checks privileges with
    unsafe {
        pg_sys::SetUserIdAndSecContext(owner, ctx | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32);
    }
    f()
}

/// The role that owns the quantops extension (on Supabase: supabase_admin), read under a pinned
/// search_path each time it is needed (a flag's first read in a backend, the gates' token), so a
/// DROP and CREATE EXTENSION by another superuser is seen at once.
pub fn extension_owner() -> Result<pg_sys::Oid, pgrx::spi::SpiError> {
    let o = pinned(|| {
        read_one::<pg_sys::Oid>(
            "select e.extowner from pg_catalog.pg_extension e where e.extname operator(pg_catalog.=) 'quantops'::pg_catalog.name",
            &[],
        )
    })?;
    // CREATE EXTENSION inserts its pg_extension row before it runs the script, so the row is
    // there whenever a quantops function runs; without it, nothing runs as anybody else
    o.ok_or(pgrx::spi::SpiError::InvalidPosition)
}

/// Runs `f` as the extension's owner (see [`as_role`]).
pub fn as_owner<R>(f: impl FnOnce() -> R) -> Result<R, pgrx::spi::SpiError> {
    let owner = extension_owner()?;
    Ok(as_role(owner, f))
}

/// The role a call came from, even inside a SECURITY DEFINER function: the role set with SET ROLE
/// (PostgREST's `set_config('role', ...)`), else the session user. What a privilege check of the
/// caller must use.
pub fn outer_user() -> pg_sys::Oid {
    // SAFETY: reads a backend global.
    unsafe { pg_sys::GetOuterUserId() }
}

/// Whether the role running this call has `anon`'s privileges and not `authenticated`'s: a
/// request without a user (or a role that stands in for one). Functions such a role may execute
/// write nothing; where one would (a sampled flag exposure), it skips the write. Without the
/// Supabase roles (plain PostgreSQL), no caller is anonymous.
pub fn caller_is_anon() -> bool {
    // SAFETY: reads backend globals and the syscache
    unsafe {
        let anon = pg_sys::get_role_oid(c"anon".as_ptr(), true);
        if anon == pg_sys::InvalidOid {
            return false;
        }
        let me = pg_sys::GetUserId();
        let authenticated = pg_sys::get_role_oid(c"authenticated".as_ptr(), true);
        pg_sys::has_privs_of_role(me, anon) && !(authenticated != pg_sys::InvalidOid && pg_sys::has_privs_of_role(me, authenticated))
    }
}

/// An SPI call that failed in SPI itself (not a PostgreSQL ERROR, which propagates with its own
/// SQLSTATE): a bug in quantops, reported as PostgreSQL reports its own "cannot happen" errors
/// (XX000), naming what quantops was doing.
pub fn failed(what: &str, e: pgrx::spi::SpiError) -> pgrx::pg_sys::panic::ErrorReport {
    pgrx::pg_sys::panic::ErrorReport::new(pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("quantops: {what} failed: {e}"), "quantops")
        .set_hint("this is a bug in quantops; please report it with the statement that raised it")
}

/// The first column of the first row of a read (`None`: no row, or SQL NULL). Read-only SPI
/// (`Spi::connect` + `select`): it never assigns a transaction id, so it works on a hot standby
/// and inside a parallel query, where pgrx's `Spi::get_one` (which always marks the transaction
/// as writing) raises. A PostgreSQL ERROR propagates with its own SQLSTATE.
pub fn read_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>, pgrx::spi::SpiError> {
    Spi::connect(|c| {
        let t = c.select(sql, Some(1), args)?;
        if t.is_empty() {
            return Ok(None);
        }
        t.first().get_one::<T>()
    })
}

/// Two columns of the first row of a read (each `None` for no row or SQL NULL); see [`read_one`].
pub fn read_two<A, B>(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<(Option<A>, Option<B>), pgrx::spi::SpiError>
where
    A: pgrx::datum::FromDatum + pgrx::datum::IntoDatum,
    B: pgrx::datum::FromDatum + pgrx::datum::IntoDatum,
{
    Spi::connect(|c| {
        let t = c.select(sql, Some(1), args)?;
        if t.is_empty() {
            return Ok((None, None));
        }
        t.first().get_two::<A, B>()
    })
}

/// The first column of the first row a writing statement returns (INSERT/UPDATE ... RETURNING,
/// SELECT ... FOR UPDATE); `None` for no row or SQL NULL.
pub fn write_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>, pgrx::spi::SpiError> {
    Spi::connect_mut(|c| {
        let t = c.update(sql, None, args)?;
        if t.is_empty() {
            return Ok(None);
        }
        t.first().get_one::<T>()
    })
}

/// Whether this transaction cannot write: READ ONLY (PostgREST sends GET and stable functions
/// so), or a hot standby.
pub fn read_only() -> bool {
    // SAFETY: reads backend globals
    unsafe { pg_sys::XactReadOnly || pg_sys::RecoveryInProgress() }
}

/// Refuses a writing function on a read replica (25006) before it does anything: PostgreSQL alone
/// would fail later, or with XX000 when pgrx assigns a transaction id, and say nothing of where to
/// go. The SQL functions that write call quantops._require_primary() the same way.
pub fn require_primary(function: &str) -> Result<(), pgrx::pg_sys::panic::ErrorReport> {
    // SAFETY: reads shared memory state
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(pgrx::pg_sys::panic::ErrorReport::new(
            pgrx::PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("cannot run quantops.{function}() on a read replica"),
            "quantops",
        )
        .set_detail(format!("this server is a hot standby in recovery: quantops.{function}() writes"))
        .set_hint("call it on the primary; a replica serves quantops' reads (docs/replicas.md)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_templates_filled_with_quoted_fragments() {
        let t = Sql::qualified("my schema", "t\"x");
        assert_eq!(t.as_str(), "\"my schema\".\"t\"\"x\"");
        assert_eq!(
            statement("select count(*) from {} where {} > 0", &[&t, &Sql::ident("c")]),
            "select count(*) from \"my schema\".\"t\"\"x\" where \"c\" > 0"
        );
        assert_eq!(Sql::literal("it's").as_str(), "'it''s'");
        assert_eq!(Sql::literal("a\\b").as_str(), "E'a\\\\b'");
        assert_eq!(Sql::join(&[Sql::ident("lists"), Sql::literal("1")], " = ").as_str(), "\"lists\" = '1'");
        assert_eq!(Sql::in_schema(&Sql::ident("extensions"), "vector").as_str(), "\"extensions\".\"vector\"");
        assert_eq!(Sql::int(-7).as_str(), "-7");
    }

    #[test]
    #[should_panic(expected = "does not match its fragments")]
    fn a_template_that_does_not_match_its_fragments_is_a_bug() {
        statement("select {} from {}", &[&Sql::ident("a")]);
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("extensions"), "\"extensions\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("x\"; drop table t; --"), "\"x\"\"; drop table t; --\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn literals_are_always_quoted() {
        assert_eq!(quote_literal("200"), "'200'");
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }
}

thread_local! {
    /// Plans of the worker's hottest statements, kept for the life of the backend (SPI_keepplan):
    /// a batch of the HTTP path runs the same few statements a hundred times a second, and
    /// planning them anew each time took about a millisecond of every batch. PostgreSQL's plan
    /// cache revalidates a kept plan after any change to what it reads (and replans when the
    /// search_path differs), so a plan is never used past a schema change.
    static KEPT: std::cell::RefCell<std::collections::HashMap<(String, Vec<u32>), std::rc::Rc<pgrx::spi::OwnedPreparedStatement>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Runs one of quantops' fixed statements through a plan kept across transactions (see [`KEPT`]),
/// prepared on first use with the types of `args` (so `$n` needs no cast in the text). Only for a
/// backend that runs the same statements many times (the worker); a PostgreSQL ERROR propagates
/// as with any statement.
pub fn kept<'conn>(
    c: &mut pgrx::spi::SpiClient<'conn>,
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<pgrx::spi::SpiTupleTable<'conn>, pgrx::spi::SpiError> {
    let key = (sql.to_string(), args.iter().map(|a| a.oid().to_u32()).collect::<Vec<_>>());
    let plan = match KEPT.with(|k| k.borrow().get(&key).cloned()) {
        Some(p) => p,
        None => {
            let types: Vec<pgrx::PgOid> = args.iter().map(|a| pgrx::PgOid::from(a.oid())).collect();
            let p = std::rc::Rc::new(c.prepare_mut(sql, &types)?.keep());
            KEPT.with(|k| k.borrow_mut().insert(key, p.clone()));
            p
        }
    };
    c.update(&*plan, None, args)
}
