//! `#[pg_test]`s: run inside a real PostgreSQL by `cargo pgrx test`.
use pgrx::prelude::*;

#[pg_test]
fn digest_is_sha256() {
    let hex: Option<String> =
        Spi::get_one("select encode(quantops._audit_digest(''::bytea, 'abc'), 'hex')").unwrap();
    assert_eq!(hex.as_deref(), Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}
