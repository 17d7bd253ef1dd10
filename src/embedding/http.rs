//! An OpenAI-compatible `/v1/embeddings` client (OpenAI, Ollama, vLLM and TEI speak it).
//! No Postgres here: the worker calls it between transactions, never inside one.

use super::core::{check_provider_vectors, classify_status, RowError};
use serde_json::{json, Value};
use std::time::Duration;

pub struct Provider {
    pub url: String,
    pub model: String,
    pub dims: usize,
    pub send_dimensions: bool,
    pub timeout: Duration,
    /// never logged, never stored in a table
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("url", &self.url).field("model", &self.model).finish_non_exhaustive()
    }
}

/// One request for a batch of inputs: the vectors in input order, or why not.
pub fn embed(p: &Provider, inputs: &[String]) -> Result<Vec<Vec<f32>>, RowError> {
    // no redirects: the allowlist names the hosts the worker may reach, and a 3xx must not lead
    // it (and its Authorization header) anywhere else
    let agent = ureq::AgentBuilder::new().timeout(p.timeout).redirects(0).build();
    let mut body = json!({ "model": p.model, "input": inputs, "encoding_format": "float" });
    if p.send_dimensions {
        body["dimensions"] = json!(p.dims);
    }
    let mut req = agent.post(&p.url).set("Content-Type", "application/json");
    if let Some(k) = &p.api_key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = match req.send_string(&body.to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let retry_after = r.header("Retry-After").map(String::from);
            let text = r.into_string().unwrap_or_default();
            return Err(classify_status(code, &text, retry_after.as_deref()));
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(RowError::Retryable { msg: format!("provider unreachable: {}", t.kind()), retry_after_ms: None });
        }
    };
    if resp.status() >= 300 {
        return Err(RowError::Permanent(format!("provider answered {} (a redirect: quantops follows none)", resp.status())));
    }
    let text = resp
        .into_string()
        .map_err(|e| RowError::Retryable { msg: format!("reading the provider's answer failed: {e}"), retry_after_ms: None })?;
    let vectors = match fast_parse(&text) {
        Some(v) => v,
        None => parse_checked(&text)?,
    };
    check_provider_vectors(&vectors, inputs.len(), p.dims)?;
    Ok(vectors)
}

/// The answer as OpenAI shapes it, read straight into vectors: no JSON tree of boxed numbers
/// (reading the tree cost the worker's provider threads about 3x the time on a 64 x 384 answer).
/// Any other shape is `None`, and [`parse_checked`] says what is wrong with it.
fn fast_parse(text: &str) -> Option<Vec<Vec<f32>>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        index: Option<u64>,
        embedding: Vec<f32>,
    }
    let a: Answer = serde_json::from_str(text).ok()?;
    let mut out: Vec<(usize, Vec<f32>)> = Vec::with_capacity(a.data.len());
    for (pos, d) in a.data.into_iter().enumerate() {
        out.push((d.index.map(|i| i as usize).unwrap_or(pos), d.embedding));
    }
    out.sort_by_key(|(i, _)| *i);
    Some(out.into_iter().map(|(_, v)| v).collect())
}

/// The answer read as a JSON tree, each way it can be wrong named.
fn parse_checked(text: &str) -> Result<Vec<Vec<f32>>, RowError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| RowError::Permanent(format!("provider returned invalid json (NaN is not json): {e}")))?;
    let data = v["data"].as_array().ok_or_else(|| RowError::Permanent("provider's answer has no data array".into()))?;
    let mut out: Vec<(usize, Vec<f32>)> = Vec::with_capacity(data.len());
    for (pos, d) in data.iter().enumerate() {
        let idx = d["index"].as_u64().map(|i| i as usize).unwrap_or(pos);
        let emb =
            d["embedding"].as_array().ok_or_else(|| RowError::Permanent("provider's answer has an item without an embedding".into()))?;
        let vec: Option<Vec<f32>> = emb.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
        out.push((idx, vec.ok_or_else(|| RowError::Permanent("provider returned a non-numeric value".into()))?));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Embeds a batch, splitting it on a permanent error until the bad inputs are isolated, so one
/// bad row never blocks the rest. A retryable error applies to every input of the request.
pub fn embed_split(p: &Provider, inputs: &[String]) -> Vec<Result<Vec<f32>, RowError>> {
    split_with(inputs, &|chunk| embed(p, chunk))
}

/// The splitting strategy, independent of the transport (unit-tested with a fake).
pub fn split_with(inputs: &[String], call: &dyn Fn(&[String]) -> Result<Vec<Vec<f32>>, RowError>) -> Vec<Result<Vec<f32>, RowError>> {
    if inputs.is_empty() {
        return Vec::new();
    }
    match call(inputs) {
        Ok(vs) => vs.into_iter().map(Ok).collect(),
        Err(e @ RowError::Retryable { .. }) => inputs.iter().map(|_| Err(e.clone())).collect(),
        Err(e @ RowError::Permanent(_)) if inputs.len() == 1 => vec![Err(e)],
        Err(RowError::Permanent(_)) => {
            let (a, b) = inputs.split_at(inputs.len() / 2);
            let mut out = split_with(a, call);
            out.extend(split_with(b, call));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_bad_row_is_isolated_with_few_calls() {
        let calls = Cell::new(0);
        let inputs: Vec<String> = (0..16).map(|i| if i == 11 { "bad".into() } else { format!("ok{i}") }).collect();
        let out = split_with(&inputs, &|chunk: &[String]| {
            calls.set(calls.get() + 1);
            if chunk.iter().any(|s| s == "bad") {
                Err(RowError::Permanent("provider answered 400: bad input".into()))
            } else {
                Ok(chunk.iter().map(|_| vec![1.0]).collect())
            }
        });
        assert_eq!(out.len(), 16);
        assert!(out.iter().enumerate().all(|(i, r)| r.is_ok() == (i != 11)));
        // 1 + 2 + 2 + 2 + 2 = 9 requests for 16 rows and one bad row (log2 depth)
        assert_eq!(calls.get(), 9);
    }

    #[test]
    fn a_retryable_error_applies_to_the_whole_request() {
        let inputs: Vec<String> = vec!["a".into(), "b".into()];
        let out = split_with(&inputs, &|_| Err(RowError::Retryable { msg: "429".into(), retry_after_ms: Some(1000) }));
        assert!(out.iter().all(|r| matches!(r, Err(RowError::Retryable { .. }))));
    }

    #[test]
    fn the_fast_read_and_the_checked_read_agree() {
        // out of order, an integer, an exponent, extra fields, an index missing: the same vectors
        let text = r#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.5,-1e-3,2]},
            {"object":"embedding","index":0,"embedding":[0.1234567,0,-0.75]}],"model":"m","usage":{"prompt_tokens":2}}"#;
        let fast = fast_parse(text).expect("an OpenAI-shaped answer is read the fast way");
        assert_eq!(fast, parse_checked(text).unwrap());
        assert_eq!(fast, vec![vec![0.1234567f32, 0.0, -0.75], vec![0.5, -1e-3, 2.0]]);
        let no_index = r#"{"data":[{"embedding":[1.5]},{"embedding":[2.5]}]}"#;
        assert_eq!(fast_parse(no_index).unwrap(), parse_checked(no_index).unwrap());
    }

    #[test]
    fn a_malformed_answer_is_named_by_the_checked_read() {
        for (text, says) in [
            (r#"{"data":[{"embedding":[NaN]}]}"#, "invalid json"),
            (r#"{"error":"x"}"#, "no data array"),
            (r#"{"data":[{"index":0}]}"#, "without an embedding"),
            (r#"{"data":[{"embedding":[1.0,"x"]}]}"#, "non-numeric"),
        ] {
            assert!(fast_parse(text).is_none(), "{text}");
            match parse_checked(text) {
                Err(RowError::Permanent(m)) => assert!(m.contains(says), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn unreachable_provider_is_retryable() {
        let p = Provider {
            url: "http://127.0.0.1:9/v1/embeddings".into(),
            model: "m".into(),
            dims: 3,
            send_dimensions: false,
            timeout: Duration::from_millis(500),
            api_key: Some("sk-secret-never-printed".into()),
        };
        let e = embed(&p, &["x".into()]).unwrap_err();
        assert_eq!(e.class(), "retryable");
        assert!(!format!("{e:?} {p:?}").contains("sk-secret"), "the key leaked into an error or debug output");
    }
}
