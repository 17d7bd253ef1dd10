//! Pure audit logic: secret redaction, the chain hash and chain verification. No Postgres here.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const GENESIS: [u8; 32] = [0u8; 32];
pub const REDACTED: &str = "[redacted]";

/// Key fragments whose values never reach the audit log.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "access_key",
    "service_role",
    "jwt",
    "cookie",
    "session",
];

pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    k == "key" || k.ends_with("_key") || SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// Replaces the value of every secret-looking key, at any depth, with `"[redacted]"`.
/// Also redacts bearer tokens and JWT-shaped strings wherever they appear.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() { Value::String(REDACTED.into()) } else { redact(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) if looks_like_credential(s) => Value::String(REDACTED.into()),
        other => other.clone(),
    }
}

fn looks_like_credential(s: &str) -> bool {
    let t = s.trim();
    // bytes, not a str slice: byte 7 may fall inside a multi-byte character
    if t.as_bytes().get(..7).is_some_and(|b| b.eq_ignore_ascii_case(b"bearer ")) {
        return true;
    }
    // a JWT: three base64url segments, the first of which decodes to a JSON header ("eyJ")
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 3
        && t.starts_with("eyJ")
        && parts.iter().all(|p| p.len() >= 4 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        || t.starts_with("sk-") && t.len() >= 20 && !t.contains(char::is_whitespace)
}

/// sha256(prev || payload): the hash of one audit row.
pub fn chain_hash(prev: &[u8], payload: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(payload.as_bytes());
    h.finalize().into()
}

/// One audit row as verification sees it.
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub seq: i64,
    pub payload: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// the row's content does not hash to its stored hash: it was altered
    Altered { seq: i64 },
    /// rows before this one are missing (a gap in seq or a broken link): removed
    Removed { after_seq: i64, seq: i64 },
    /// the stream's head says more rows exist than are present: the newest were removed
    TailRemoved { last_seq: i64, head_seq: i64 },
}

impl Problem {
    pub fn seq(&self) -> i64 {
        match self {
            Problem::Altered { seq } | Problem::Removed { seq, .. } => *seq,
            Problem::TailRemoved { last_seq, .. } => *last_seq + 1,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Problem::Altered { seq } => format!("row {seq} was altered: its content does not match its hash"),
            Problem::Removed { after_seq, seq } => {
                format!("rows between {after_seq} and {seq} were removed: row {seq} does not link to its predecessor")
            }
            Problem::TailRemoved { last_seq, head_seq } => {
                format!("rows after {last_seq} were removed: the stream's head is at {head_seq}")
            }
        }
    }
}

/// Verifies one stream's rows, given in seq order, against the stream head's seq.
/// Returns every problem found; an empty list means the chain is intact.
pub fn verify_chain(rows: &[ChainRow], head_seq: Option<i64>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut prev_seq = 0i64;
    let mut prev_hash: Vec<u8> = GENESIS.to_vec();
    for r in rows {
        let linked = r.seq == prev_seq + 1 && r.prev_hash == prev_hash;
        if !linked {
            problems.push(Problem::Removed { after_seq: prev_seq, seq: r.seq });
        }
        if chain_hash(&r.prev_hash, &r.payload).as_slice() != r.hash.as_slice() {
            problems.push(Problem::Altered { seq: r.seq });
        }
        prev_seq = r.seq;
        prev_hash = r.hash.clone();
    }
    if let Some(h) = head_seq {
        if h > prev_seq {
            problems.push(Problem::TailRemoved { last_seq: prev_seq, head_seq: h });
        }
    }
    problems
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<ChainRow> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let payload = format!("{{\"seq\": {seq}}}");
                let hash = chain_hash(&prev, &payload).to_vec();
                let r = ChainRow { seq, payload, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                r
            })
            .collect()
    }

    #[test]
    fn chain_hash_is_sha256_of_prev_and_payload() {
        // sha256("abc") with an empty prev, the FIPS 180-2 test vector
        assert_eq!(hex(&chain_hash(b"", "abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(chain_hash(&GENESIS, "abc"), chain_hash(b"", "abc"));
    }

    #[test]
    fn redaction_reads_any_text() {
        // byte 7 inside a multi-byte character once panicked (XX000) and echoed the text
        for text in ["Résumé de la stratégie", "日本語テキスト", "abcdefé", "Bearer", "Bearér x"] {
            let out = redact(&json!({ "q": text }));
            assert_eq!(out["q"], json!(text), "{text} is not a credential");
        }
        assert_eq!(redact(&json!({ "q": "BEARER abc.def" }))["q"], json!(REDACTED));
    }

    #[test]
    fn intact_chain_verifies() {
        assert!(verify_chain(&chain(5), Some(5)).is_empty());
        assert!(verify_chain(&[], None).is_empty());
    }

    #[test]
    fn altered_row_is_found() {
        let mut c = chain(5);
        c[2].payload = "{\"seq\": 3, \"outcome\": \"ok\"}".into();
        assert_eq!(verify_chain(&c, Some(5)), vec![Problem::Altered { seq: 3 }]);
    }

    #[test]
    fn removed_row_is_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(&c, Some(5)), vec![Problem::Removed { after_seq: 1, seq: 3 }]);
    }

    #[test]
    fn removed_and_renumbered_row_is_found() {
        // an attacker removes row 2 and renumbers 3..5 to 2..4: the links still break
        let mut c = chain(5);
        c.remove(1);
        for r in c.iter_mut().skip(1) {
            r.seq -= 1;
        }
        let p = verify_chain(&c, Some(4));
        assert_eq!(p[0], Problem::Removed { after_seq: 1, seq: 2 });
    }

    #[test]
    fn removed_tail_is_found() {
        let mut c = chain(5);
        c.truncate(3);
        assert_eq!(verify_chain(&c, Some(5)), vec![Problem::TailRemoved { last_seq: 3, head_seq: 5 }]);
        assert_eq!(verify_chain(&c, Some(5))[0].seq(), 4);
    }

    #[test]
    fn rehashed_forgery_still_breaks_the_next_link() {
        let mut c = chain(4);
        c[1].payload = "{\"seq\": 2, \"forged\": true}".into();
        c[1].hash = chain_hash(&c[1].prev_hash, &c[1].payload).to_vec();
        assert_eq!(verify_chain(&c, Some(4)), vec![Problem::Removed { after_seq: 2, seq: 3 }]);
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = json!({
            "symbol": "AAPL",
            "api_key": "abc",
            "OPENAI_API_KEY": "sk-live-0123456789abcdefghij",
            "nested": {"Authorization": "Bearer x", "password": "p", "limit": 5,
                       "list": [{"token": "t"}, "plain"]},
            "header": "Bearer abc.def.ghi",
            "jwt_in_text": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "key": null
        });
        let r = redact(&v);
        assert_eq!(r["symbol"], "AAPL");
        assert_eq!(r["api_key"], REDACTED);
        assert_eq!(r["OPENAI_API_KEY"], REDACTED);
        assert_eq!(r["nested"]["Authorization"], REDACTED);
        assert_eq!(r["nested"]["password"], REDACTED);
        assert_eq!(r["nested"]["limit"], 5);
        assert_eq!(r["nested"]["list"][0]["token"], REDACTED);
        assert_eq!(r["nested"]["list"][1], "plain");
        assert_eq!(r["header"], REDACTED);
        assert_eq!(r["jwt_in_text"], REDACTED);
        assert_eq!(r["key"], Value::Null);
    }

    #[test]
    fn ordinary_keys_are_kept() {
        for k in ["symbol", "strategy", "keyword", "monkey", "keys_count", "as_of"] {
            assert!(!is_secret_key(k), "{k} should not be secret");
        }
        for k in ["key", "api-key", "apiKey", "X_API_KEY", "client_secret", "refresh_token", "sessionId"] {
            assert!(is_secret_key(k), "{k} should be secret");
        }
    }
}
