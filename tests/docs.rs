//! The documentation against the installed extension: every routine in pg_proc has its entry in
//! docs/reference.md and every entry there is a routine; every routine the docs call exists; every
//! SQLSTATE quantops raises is in the reference's error table.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every routine of the extension, by name (overloads share an entry).
fn routines() -> BTreeSet<String> {
    admin()
        .query(
            "select distinct p.proname::text from pg_catalog.pg_proc p \
             join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e' \
             join pg_catalog.pg_extension e on e.oid = d.refobjid and e.extname = 'quantops'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The `### quantops.<name>` headings of docs/reference.md.
fn reference_entries() -> BTreeSet<String> {
    read("docs/reference.md").lines().filter_map(|l| l.strip_prefix("### quantops.")).map(|n| n.trim().to_string()).collect()
}

/// The user-facing docs: the README, docs/ and CONTRIBUTING.md (not the CHANGELOG or the
/// benchmark record, which speak of the past).
fn user_docs() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), read("README.md")), ("CONTRIBUTING.md".to_string(), read("CONTRIBUTING.md"))];
    let mut pages: Vec<_> = fs::read_dir(format!("{ROOT}/docs")).unwrap().map(|e| e.unwrap().path()).collect();
    pages.sort();
    for p in pages {
        if p.extension().is_some_and(|x| x == "md") {
            let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            out.push((name.clone(), read(&name)));
        }
    }
    out
}

#[test]
fn every_routine_has_its_reference_entry_and_every_entry_is_a_routine() {
    let have = routines();
    let documented = reference_entries();
    assert!(have.len() > 50, "only {} routines found: is quantops installed?", have.len());
    let undocumented: Vec<_> = have.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&have).collect();
    assert!(undocumented.is_empty(), "in pg_proc but not in docs/reference.md: {undocumented:?}");
    assert!(stale.is_empty(), "in docs/reference.md but not in pg_proc: {stale:?}");
}

#[test]
fn every_routine_the_docs_call_exists() {
    let have = routines();
    let mut missing = Vec::new();
    for (file, text) in user_docs() {
        for (i, _) in text.match_indices("quantops.") {
            let name: String =
                text[i + "quantops.".len()..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            let called = text[i + "quantops.".len() + name.len()..].starts_with('(');
            if called && !name.is_empty() && !have.contains(&name) {
                missing.push(format!("{file}: quantops.{name}("));
            }
        }
    }
    assert!(missing.is_empty(), "the docs call routines that do not exist: {missing:?}");
}

#[test]
fn every_sqlstate_raised_is_in_the_error_table() {
    let reference = read("docs/reference.md");
    let table: String = reference
        .split("\n## Errors")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("docs/reference.md has an Errors section")
        .to_string();
    let mut raised = BTreeSet::new();
    // SQL: errcode = '22023'
    for f in ["bootstrap", "embedding", "index", "prune", "registry", "backtest", "flags"] {
        let text = read(&format!("sql/{f}.sql"));
        for (i, _) in text.match_indices("errcode = '") {
            raised.insert(text[i + 11..i + 16].to_string());
        }
    }
    // Rust: PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, listed by name
    let mut names = BTreeSet::new();
    let mut stack = vec![format!("{ROOT}/src")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.to_string_lossy().into_owned());
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("ERRCODE_") {
                    let n: String = text[i + 8..].chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
                    names.insert(n.to_lowercase());
                }
            }
        }
    }
    let missing_codes: Vec<_> = raised.iter().filter(|c| !table.contains(c.as_str())).collect();
    let missing_names: Vec<_> = names.iter().filter(|n| !table.contains(n.as_str())).collect();
    assert!(raised.len() >= 10 && names.len() >= 10, "too few SQLSTATEs found: {raised:?} {names:?}");
    assert!(missing_codes.is_empty(), "raised in sql/ but not in the error table of docs/reference.md: {missing_codes:?}");
    assert!(missing_names.is_empty(), "raised in src/ but not in the error table of docs/reference.md: {missing_names:?}");
}

/// The README is for users: what quantops is, install, a quickstart, an example per capability,
/// the settings, upgrading, troubleshooting; everything else has its page. It stays under 20 kB.
#[test]
fn the_readme_stays_under_20_kb() {
    let n = read("README.md").len();
    assert!(n < 20_000, "README.md is {n} bytes: move detail to docs/, CONTRIBUTING.md or BENCHMARKS.md");
}

/// Every page under docs/ is linked from the README, so a user finds it.
#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = read("README.md");
    for (name, _) in user_docs().into_iter().filter(|(n, _)| n.starts_with("docs/")) {
        assert!(readme.contains(&format!("({name}")), "README.md does not link {name}");
    }
}
