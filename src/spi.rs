//! The one place that builds SQL text. Identifiers are quoted here; values are always bound as $n.

use pgrx::prelude::*;

/// Quotes an identifier the way `quote_ident` does, always (never trusts the input to be plain).
pub fn quote_ident(name: &str) -> String {
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
pub fn quote_literal(v: &str) -> String {
    let body = v.replace('\'', "''");
    if v.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// The schema (already quoted) where pgvector's `vector` type lives, e.g. `"extensions"`.
pub fn vector_schema() -> Option<String> {
    Spi::get_one::<String>(
        "select n.nspname::text from pg_catalog.pg_extension e \
         join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector'",
    )
    .ok()
    .flatten()
    .map(|s| quote_ident(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// Runs a statement; a failure of SPI itself (not a Postgres ERROR, which propagates on its own)
/// is raised as an internal error naming the statement's purpose.
pub fn run(what: &str, sql: &str, args: &[pgrx::datum::DatumWithOid]) {
    if let Err(e) = Spi::run_with_args(sql, args) {
        pgrx::error!("quantops: {what} failed: {e}");
    }
}
