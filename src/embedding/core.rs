//! Pure embedding logic: the embedders, the exact input hash, failure classes, backoff.
//! No Postgres here; `sql.rs` and `worker.rs` feed it rows and write back what it returns.

use super::jsonb::{self, JsonbBytes};
use crate::hash::{murmur3_32, splitmix64};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The inputs of one signal that an embedder may read.
#[derive(Debug, Clone, Default)]
pub struct SignalInput {
    pub strategy: String,
    pub symbol: String,
    /// `features`, parsed here (in parallel)
    pub features: Features,
    pub series: Option<Vec<f64>>,
    pub rationale: Option<String>,
    pub tags: Vec<String>,
}

/// A signal's `features` jsonb: its bytes as stored (what the refresh reads) or JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    Binary(JsonbBytes),
    Text(String),
}

impl Default for Features {
    fn default() -> Self {
        Features::Text("{}".into())
    }
}

impl From<&str> for Features {
    fn from(s: &str) -> Self {
        Features::Text(s.into())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Features(FeaturesParams),
    Series(SeriesParams),
    Hashing(HashingParams),
    Http(HttpParams),
    Model(ModelParams),
}

/// The built-in local sentence model (see `model/`): run by the quantops embedder worker only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// the model's folder under quantops.model_dir (a name, never a path)
    pub model: String,
    /// the text embedded for a signal, as for the http embedder
    #[serde(default = "default_template")]
    pub template: String,
    /// rows leased per step (the model batches them by length itself)
    #[serde(default = "default_model_batch")]
    pub batch_size: usize,
    #[serde(default = "default_attempts")]
    pub max_attempts: i32,
}

fn default_model_batch() -> usize {
    256
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesParams {
    /// the named features, in order
    pub features: Vec<String>,
    /// stored statistics: standardised value = (x - mean) / std
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// seed of the fixed ±1 projection to `dims` when there are not exactly `dims` features
    #[serde(default)]
    pub seed: u64,
    /// "error" (default): a missing feature is a permanent error; "mean": it counts as the mean
    #[serde(default = "default_missing")]
    pub missing: String,
}

fn default_missing() -> String {
    "error".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    #[serde(default = "default_min_len")]
    pub min_length: usize,
}

fn default_min_len() -> usize {
    2
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashingParams {
    #[serde(default)]
    pub seed: u32,
    /// which text fields to hash: "rationale", "tags", "strategy", "symbol"
    #[serde(default = "default_hash_fields")]
    pub fields: Vec<String>,
}

fn default_hash_fields() -> Vec<String> {
    vec!["rationale".into(), "tags".into()]
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpParams {
    /// an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1/embeddings
    pub url: String,
    pub model: String,
    /// the text embedded for a signal; {strategy} {symbol} {rationale} {tags} are replaced
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: i32,
    /// requests in flight at once, at most (a provider's rate limits are per minute, not per
    /// connection); throttled answers lower it for a while (see [`Aimd`])
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// send "dimensions": dims in the request (OpenAI's text-embedding-3 models accept it)
    #[serde(default)]
    pub send_dimensions: bool,
    /// name of a Supabase Vault secret holding the API key; else the superuser-only setting
    /// quantops.embedding_api_key_file; else no Authorization header
    #[serde(default)]
    pub api_key_secret: Option<String>,
}

fn default_template() -> String {
    "{strategy} {symbol}: {rationale} [{tags}]".into()
}
fn default_batch() -> usize {
    64
}
fn default_timeout() -> u64 {
    10_000
}
fn default_attempts() -> i32 {
    5
}
fn default_concurrency() -> usize {
    4
}

/// A configured embedder: name, version, dimension and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedder {
    pub name: String,
    pub version: i32,
    pub dims: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamError {
    UnknownKind(String),
    Params(String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::UnknownKind(k) => write!(f, "unknown embedder kind \"{k}\""),
            ParamError::Params(m) => write!(f, "{m}"),
        }
    }
}

impl Embedder {
    /// Parses and validates an embedder's configuration.
    pub fn parse(name: &str, version: i32, kind: &str, dims: i32, params: &Value) -> Result<Embedder, ParamError> {
        if !(1..=2000).contains(&dims) {
            return Err(ParamError::Params(format!("dims must be between 1 and 2000, not {dims}")));
        }
        let p = |e: serde_json::Error| ParamError::Params(format!("invalid {kind} params: {e}"));
        let kind = match kind {
            "features" => {
                let f: FeaturesParams = serde_json::from_value(params.clone()).map_err(p)?;
                if f.features.is_empty() {
                    return Err(ParamError::Params("features must name at least one feature".into()));
                }
                if f.mean.len() != f.features.len() || f.std.len() != f.features.len() {
                    return Err(ParamError::Params(format!(
                        "mean and std must have one value per feature ({} features, {} means, {} stds)",
                        f.features.len(),
                        f.mean.len(),
                        f.std.len()
                    )));
                }
                if f.std.iter().any(|s| !s.is_finite() || *s <= 0.0) || f.mean.iter().any(|m| !m.is_finite()) {
                    return Err(ParamError::Params("every std must be finite and positive, every mean finite".into()));
                }
                if f.missing != "error" && f.missing != "mean" {
                    return Err(ParamError::Params(format!("missing must be \"error\" or \"mean\", not \"{}\"", f.missing)));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(d) = f.features.iter().find(|n| !seen.insert(n.as_str())) {
                    return Err(ParamError::Params(format!("feature \"{d}\" is named twice")));
                }
                Kind::Features(f)
            }
            "series" => {
                let s: SeriesParams = serde_json::from_value(params.clone()).map_err(p)?;
                if s.min_length < 2 {
                    return Err(ParamError::Params("min_length must be at least 2".into()));
                }
                Kind::Series(s)
            }
            "hashing" => {
                let h: HashingParams = serde_json::from_value(params.clone()).map_err(p)?;
                if h.fields.is_empty() {
                    return Err(ParamError::Params("fields must name at least one field".into()));
                }
                if let Some(f) = h.fields.iter().find(|f| !["rationale", "tags", "strategy", "symbol"].contains(&f.as_str())) {
                    return Err(ParamError::Params(format!("unknown field \"{f}\": fields are rationale, tags, strategy, symbol")));
                }
                Kind::Hashing(h)
            }
            "http" => {
                let h: HttpParams = serde_json::from_value(params.clone()).map_err(p)?;
                if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                    return Err(ParamError::Params("url must start with http:// or https://".into()));
                }
                if h.model.trim().is_empty() {
                    return Err(ParamError::Params("model must not be empty".into()));
                }
                if !(1..=2048).contains(&h.batch_size) {
                    return Err(ParamError::Params("batch_size must be between 1 and 2048".into()));
                }
                if !(100..=600_000).contains(&h.timeout_ms) {
                    return Err(ParamError::Params("timeout_ms must be between 100 and 600000".into()));
                }
                if !(1..=100).contains(&h.max_attempts) {
                    return Err(ParamError::Params("max_attempts must be between 1 and 100".into()));
                }
                if !(1..=64).contains(&h.concurrency) {
                    return Err(ParamError::Params("concurrency must be between 1 and 64".into()));
                }
                Kind::Http(h)
            }
            "model" => {
                let m: ModelParams = serde_json::from_value(params.clone()).map_err(p)?;
                if !crate::embedding::model::valid_name(&m.model) {
                    return Err(ParamError::Params(format!(
                        "model must be the name of a folder under quantops.model_dir (letters, digits, '.', '_', '-'), not \"{}\"",
                        m.model
                    )));
                }
                if !(1..=4096).contains(&m.batch_size) {
                    return Err(ParamError::Params("batch_size must be between 1 and 4096".into()));
                }
                if !(1..=100).contains(&m.max_attempts) {
                    return Err(ParamError::Params("max_attempts must be between 1 and 100".into()));
                }
                Kind::Model(m)
            }
            other => return Err(ParamError::UnknownKind(other.to_string())),
        };
        Ok(Embedder { name: name.to_string(), version, dims: dims as usize, kind })
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Features(_) => "features",
            Kind::Series(_) => "series",
            Kind::Hashing(_) => "hashing",
            Kind::Http(_) => "http",
            Kind::Model(_) => "model",
        }
    }

    /// Embedded in the backend that asks (features, series, hashing); else by a worker only:
    /// the http provider is called between transactions and the model lives in the embedder worker.
    pub fn is_builtin(&self) -> bool {
        !matches!(self.kind, Kind::Http(_) | Kind::Model(_))
    }

    /// The text template of an embedder that embeds text (http, model).
    pub fn template(&self) -> Option<&str> {
        match &self.kind {
            Kind::Http(p) => Some(&p.template),
            Kind::Model(p) => Some(&p.template),
            _ => None,
        }
    }
}

/// Why one row could not be embedded.
#[derive(Debug, Clone, PartialEq)]
pub enum RowError {
    /// the input itself is unusable: retrying cannot help
    Permanent(String),
    /// the provider failed in a way that may pass: retry later
    Retryable { msg: String, retry_after_ms: Option<u64> },
}

impl RowError {
    pub fn class(&self) -> &'static str {
        match self {
            RowError::Permanent(_) => "permanent",
            RowError::Retryable { .. } => "retryable",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            RowError::Permanent(m) | RowError::Retryable { msg: m, .. } => m,
        }
    }
}

fn features_hash(p: &FeaturesParams, vals: &[Option<f64>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"features\0");
    for (name, v) in p.features.iter().zip(vals) {
        h.update(name.as_bytes());
        h.update([0u8]);
        match v {
            Some(x) => h.update(x.to_le_bytes()),
            None => h.update([0xffu8; 1]),
        }
    }
    h.finalize().into()
}

/// What an embedder reads of a row, hashed: equal hashes mean equal embeddings.
pub fn input_hash(e: &Embedder, row: &SignalInput) -> Result<[u8; 32], RowError> {
    let mut h = Sha256::new();
    match &e.kind {
        Kind::Features(p) => return Ok(features_hash(p, &feature_values(p, &row.features)?)),
        Kind::Series(_) => {
            h.update(b"series\0");
            for x in row.series.as_deref().unwrap_or(&[]) {
                h.update(x.to_le_bytes());
            }
        }
        Kind::Hashing(p) => {
            h.update(b"hashing\0");
            for t in tokens(p, row) {
                h.update(t.as_bytes());
                h.update([0x1e]);
            }
        }
        Kind::Http(p) => {
            h.update(b"http\0");
            h.update(render(&p.template, row).as_bytes());
        }
        Kind::Model(p) => {
            h.update(b"model\0");
            h.update(p.model.as_bytes());
            h.update([0u8]);
            h.update(render(&p.template, row).as_bytes());
        }
    }
    Ok(h.finalize().into())
}

fn feature_values(p: &FeaturesParams, features: &Features) -> Result<Vec<Option<f64>>, RowError> {
    let value = |name: &str, v: Option<jsonb::Value>| match v {
        None | Some(jsonb::Value::Null) if p.missing == "mean" => Ok(None),
        None | Some(jsonb::Value::Null) => Err(RowError::Permanent(format!("feature \"{name}\" is missing"))),
        Some(jsonb::Value::Number(x)) if x.is_finite() => Ok(Some(x)),
        Some(jsonb::Value::Number(_)) => Err(RowError::Permanent(format!("feature \"{name}\" is not a finite number"))),
        Some(other) => Err(RowError::Permanent(format!("feature \"{name}\" is not a number: {}", other.type_name()))),
    };
    let not_object = |what: &str| RowError::Permanent(format!("features is not a json object but {what}"));
    match features {
        Features::Binary(b) => {
            let obj = b.object().map_err(|what| not_object(&what))?;
            p.features.iter().map(|name| value(name, obj.get(name).map_err(|e| RowError::Permanent(format!("features: {e}")))?)).collect()
        }
        Features::Text(t) => {
            let v: Value = serde_json::from_str(t).map_err(|e| RowError::Permanent(format!("features is not valid json: {e}")))?;
            let obj = v.as_object().ok_or_else(|| not_object(if v.is_array() { "an array" } else { "a scalar" }))?;
            p.features.iter().map(|name| value(name, obj.get(name).map(jsonb::Value::of_json))).collect()
        }
    }
}

/// The ±1 entry (i, j) of the features embedder's fixed projection.
#[inline]
pub fn projection_sign(seed: u64, dims: usize, i: usize, j: usize) -> f64 {
    if splitmix64(seed, (i * dims + j) as u64) >> 63 == 0 {
        1.0
    } else {
        -1.0
    }
}

/// L2-normalises in place; a zero or non-finite vector is an error.
fn l2_normalise(v: &mut [f32], what: &str) -> Result<(), RowError> {
    let norm: f64 = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(RowError::Permanent(format!("{what} gives a zero vector, which has no direction")));
    }
    for x in v.iter_mut() {
        *x = (*x as f64 / norm) as f32;
    }
    Ok(())
}

fn check_finite(v: &[f32]) -> Result<(), RowError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(RowError::Permanent("the embedding has NaN or infinite values".into()))
    }
}

/// The features embedder's vector from the row's feature values.
fn features_vector(d: usize, p: &FeaturesParams, vals: &[Option<f64>], projection: Option<&[f32]>) -> Result<Vec<f32>, RowError> {
    let z: Vec<f64> = vals.iter().zip(p.mean.iter().zip(&p.std)).map(|(v, (m, s))| v.map(|x| (x - m) / s).unwrap_or(0.0)).collect();
    if z.iter().any(|x| !x.is_finite()) {
        return Err(RowError::Permanent("a standardised feature is not finite".into()));
    }
    let mut out = vec![0f32; d];
    if z.len() == d {
        for (o, x) in out.iter_mut().zip(&z) {
            *o = *x as f32;
        }
    } else {
        let proj = projection.expect("the features embedder needs its projection");
        let mut acc = vec![0f64; d];
        for (i, zi) in z.iter().enumerate() {
            if *zi == 0.0 {
                continue;
            }
            let row = &proj[i * d..(i + 1) * d];
            for (a, r) in acc.iter_mut().zip(row) {
                *a += zi * (*r as f64);
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    }
    l2_normalise(&mut out, "these features")?;
    check_finite(&out)?;
    Ok(out)
}

/// Embeds one row with a built-in embedder.
pub fn embed_one(e: &Embedder, row: &SignalInput, projection: Option<&[f32]>) -> Result<Vec<f32>, RowError> {
    let d = e.dims;
    let out = match &e.kind {
        Kind::Features(p) => features_vector(d, p, &feature_values(p, &row.features)?, projection)?,
        Kind::Series(p) => {
            let s = row.series.as_deref().unwrap_or(&[]);
            if s.len() < p.min_length {
                return Err(RowError::Permanent(format!(
                    "the series has {} points; the series embedder needs at least {}",
                    s.len(),
                    p.min_length
                )));
            }
            if s.iter().any(|x| !x.is_finite()) {
                return Err(RowError::Permanent("the series has NaN or infinite values".into()));
            }
            let n = s.len() as f64;
            let mean = s.iter().sum::<f64>() / n;
            let var = s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
            let sd = var.sqrt();
            if sd.is_nan() || sd <= 0.0 || sd.is_infinite() {
                return Err(RowError::Permanent("the series is constant: it has no shape to embed".into()));
            }
            let z: Vec<f64> = s.iter().map(|x| (x - mean) / sd).collect();
            paa(&z, d).into_iter().map(|x| x as f32).collect()
        }
        Kind::Hashing(p) => {
            let mut out = vec![0f32; d];
            for t in tokens(p, row) {
                let b = t.as_bytes();
                let bucket = (murmur3_32(b, p.seed) as usize) % d;
                let sign = if murmur3_32(b, p.seed.wrapping_add(1)) & 1 == 0 { 1.0 } else { -1.0 };
                out[bucket] += sign;
            }
            l2_normalise(&mut out, "this text")?;
            out
        }
        Kind::Http(_) | Kind::Model(_) => unreachable!("http and model embeddings come from a worker"),
    };
    check_finite(&out)?;
    Ok(out)
}

/// Piecewise aggregate approximation of `z` to `d` segments, with fractional overlaps so any
/// length maps to any dimension (a shorter series is stretched, a longer one averaged).
pub fn paa(z: &[f64], d: usize) -> Vec<f64> {
    let n = z.len();
    let mut out = vec![0f64; d];
    // segment j covers [j*n/d, (j+1)*n/d) of the input, in units of input points
    for (j, o) in out.iter_mut().enumerate() {
        let lo = j as f64 * n as f64 / d as f64;
        let hi = (j + 1) as f64 * n as f64 / d as f64;
        let mut acc = 0.0;
        let mut i = lo.floor() as usize;
        while (i as f64) < hi && i < n {
            let a = (i as f64).max(lo);
            let b = ((i + 1) as f64).min(hi);
            acc += z[i] * (b - a);
            i += 1;
        }
        *o = acc / (hi - lo);
    }
    out
}

fn tokens(p: &HashingParams, row: &SignalInput) -> Vec<String> {
    let mut out = Vec::new();
    for f in &p.fields {
        match f.as_str() {
            "rationale" => {
                if let Some(r) = &row.rationale {
                    out.extend(r.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(|t| t.to_lowercase()));
                }
            }
            "tags" => out.extend(row.tags.iter().map(|t| format!("tag={}", t.to_lowercase()))),
            "strategy" => out.push(format!("strategy={}", row.strategy)),
            "symbol" => out.push(format!("symbol={}", row.symbol)),
            _ => {}
        }
    }
    out
}

/// A local model's vector for one row: the embedder's dimension, finite (the model normalised it).
pub fn check_model_vector(v: Vec<f32>, dims: usize) -> Result<Vec<f32>, RowError> {
    if v.len() != dims {
        return Err(RowError::Permanent(format!("the model gives {} dimensions; the embedder has {dims}", v.len())));
    }
    check_finite(&v)?;
    Ok(v)
}

/// The text an HTTP embedder sends for a row.
pub fn render(template: &str, row: &SignalInput) -> String {
    template
        .replace("{strategy}", &row.strategy)
        .replace("{symbol}", &row.symbol)
        .replace("{rationale}", row.rationale.as_deref().unwrap_or(""))
        .replace("{tags}", &row.tags.join(", "))
}

/// The fixed projection matrix (features x dims, row-major) of a features embedder, if needed.
pub fn projection(e: &Embedder) -> Option<Vec<f32>> {
    match &e.kind {
        Kind::Features(p) if p.features.len() != e.dims => {
            let (n, d) = (p.features.len(), e.dims);
            let mut m = vec![0f32; n * d];
            for i in 0..n {
                for j in 0..d {
                    m[i * d + j] = projection_sign(p.seed, d, i, j) as f32;
                }
            }
            Some(m)
        }
        _ => None,
    }
}

/// The result for one row of a batch.
pub struct Embedded {
    pub hash: Result<[u8; 32], RowError>,
    pub vector: Option<Result<Vec<f32>, RowError>>,
}

/// Hashes a batch and embeds the rows whose hash differs from `stored` (or whose embedder
/// changed: `force`), in parallel with rayon (`threads::run`).
/// Built-in embedders only.
pub fn embed_batch(e: &Embedder, rows: &[(SignalInput, Option<Vec<u8>>, bool)]) -> Vec<Embedded> {
    let proj = projection(e);
    let run = || -> Vec<Embedded> {
        rows.par_iter()
            .with_min_len(64)
            .map(|(row, stored, force)| {
                // the features embedder parses a row's features once, for the hash and the vector
                let vals = match &e.kind {
                    Kind::Features(p) => Some((p, feature_values(p, &row.features))),
                    _ => None,
                };
                let hash = match &vals {
                    Some((p, Ok(v))) => Ok(features_hash(p, v)),
                    Some((_, Err(err))) => Err(err.clone()),
                    None => input_hash(e, row),
                };
                let needs = match (&hash, stored) {
                    (Ok(h), Some(s)) => *force || s.as_slice() != h.as_slice(),
                    _ => true,
                };
                let vector = match &hash {
                    Err(err) => Some(Err(err.clone())),
                    Ok(_) if needs => Some(match &vals {
                        Some((p, Ok(v))) => features_vector(e.dims, p, v, proj.as_deref()),
                        _ => embed_one(e, row, proj.as_deref()),
                    }),
                    Ok(_) => None,
                };
                Embedded { hash, vector }
            })
            .collect()
    };
    crate::threads::run(run)
}

/// Exponential backoff with full jitter: a delay in [0, min(cap, base * 2^(attempt-1))], and
/// never less than what the provider asked for with Retry-After.
pub fn backoff_ms(attempt: i32, base_ms: u64, cap_ms: u64, jitter: f64, retry_after_ms: Option<u64>) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << (attempt.clamp(1, 30) - 1) as u32).min(cap_ms);
    let j = (jitter.clamp(0.0, 1.0) * exp as f64) as u64;
    j.max(retry_after_ms.unwrap_or(0)).max(1)
}

/// Parses a Retry-After header: delta-seconds (the form providers use); dates are ignored.
pub fn parse_retry_after(h: Option<&str>) -> Option<u64> {
    let s = h?.trim();
    let secs: f64 = s.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).min(3_600_000.0) as u64)
}

/// Classifies an HTTP status: 429, 408 and 5xx are retryable, other 4xx permanent. The answer's
/// body is never kept (it is stored where service_role reads it, and a provider may echo input or
/// say more than it should): only its length and the first 8 bytes of its sha256, enough to tell
/// two answers apart in the dead letters.
pub fn classify_status(status: u16, body: &str, retry_after: Option<&str>) -> RowError {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let msg = format!("provider answered {status} (body: {} bytes, sha256 {hex})", body.len());
    if status == 429 || status == 408 || (500..600).contains(&status) {
        RowError::Retryable { msg, retry_after_ms: parse_retry_after(retry_after) }
    } else {
        RowError::Permanent(msg)
    }
}

/// Checks a provider's vectors: one per input, each of `dims` finite values.
pub fn check_provider_vectors(vectors: &[Vec<f32>], inputs: usize, dims: usize) -> Result<(), RowError> {
    if vectors.len() != inputs {
        return Err(RowError::Permanent(format!("provider returned {} vectors for {inputs} inputs", vectors.len())));
    }
    for v in vectors {
        if v.len() != dims {
            return Err(RowError::Permanent(format!("provider returned a vector of {} dimensions, expected {dims}", v.len())));
        }
        check_finite(v)?;
    }
    Ok(())
}

/// How many requests the HTTP path keeps in flight, adaptively (additive increase, multiplicative
/// decrease): a throttled answer halves the limit (once per wait, however many requests in flight
/// were throttled together) and holds new requests until the wait is over; every clean answer
/// allows one more, up to the embedder's `concurrency`.
#[derive(Debug, Clone)]
pub struct Aimd {
    max: usize,
    limit: usize,
    hold_until: Option<std::time::Instant>,
    last_wait_ms: Option<u64>,
}

impl Aimd {
    pub fn new(max: usize) -> Aimd {
        let max = max.max(1);
        Aimd { max, limit: max, hold_until: None, last_wait_ms: None }
    }
    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// The last rate-limit wait, if any was asked for.
    pub fn last_wait_ms(&self) -> Option<u64> {
        self.last_wait_ms
    }
    /// Whether a new request may start at `now` (not inside a rate-limit wait).
    pub fn may_send(&self, now: std::time::Instant) -> bool {
        self.hold_until.is_none_or(|t| now >= t)
    }
    /// When the current wait ends, if one is on.
    pub fn hold_until(&self) -> Option<std::time::Instant> {
        self.hold_until
    }
    pub fn on_throttle(&mut self, now: std::time::Instant, wait: std::time::Duration) {
        let new_wait = self.may_send(now);
        if new_wait {
            self.limit = (self.limit / 2).max(1);
        }
        let until = now + wait;
        self.hold_until = Some(self.hold_until.map_or(until, |t| t.max(until)));
        self.last_wait_ms = Some(wait.as_millis() as u64);
    }
    pub fn on_success(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
    }
}

/// The wait a provider asked for in an answer: the longest Retry-After among its rows, or one
/// second for a 429 without one. None when nothing in it was throttled.
pub fn throttle_wait(results: &[Result<Vec<f32>, RowError>]) -> Option<std::time::Duration> {
    let mut wait: Option<u64> = None;
    for r in results {
        if let Err(RowError::Retryable { msg, retry_after_ms }) = r {
            let ms = match retry_after_ms {
                Some(ms) => Some(*ms),
                None if msg.starts_with("provider answered 429") => Some(1000),
                None => None,
            };
            if let Some(ms) = ms {
                wait = Some(wait.map_or(ms, |w| w.max(ms)));
            }
        }
    }
    wait.map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feat(dims: i32, names: &[&str]) -> Embedder {
        let n = names.len();
        Embedder::parse("f", 1, "features", dims, &json!({"features": names, "mean": vec![0.1; n], "std": vec![0.5; n], "seed": 7}))
            .unwrap()
    }

    fn row(features: &str) -> SignalInput {
        SignalInput {
            strategy: "momentum_v1".into(),
            symbol: "AAPL".into(),
            features: features.into(),
            series: Some(vec![0.01, -0.02, 0.03, 0.0, 0.015]),
            rationale: Some("Breakout above the 50d high, volume surge".into()),
            tags: vec!["long".into(), "Momentum".into()],
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn features_identity_when_dims_match_pinned() {
        let e = feat(2, &["a", "b"]);
        let v = embed_one(&e, &row(r#"{"a": 0.6, "b": -0.4, "other": 9}"#), projection(&e).as_deref()).unwrap();
        // z = (1.0, -1.0) -> normalised (1/sqrt2, -1/sqrt2)
        assert_eq!(bits(&v), bits(&[std::f32::consts::FRAC_1_SQRT_2, -std::f32::consts::FRAC_1_SQRT_2]));
    }

    #[test]
    fn features_projection_is_deterministic_and_pinned() {
        let e = feat(8, &["a", "b", "c"]);
        let r = row(r#"{"a": 0.6, "b": -0.4, "c": 0.1}"#);
        let v1 = embed_one(&e, &r, projection(&e).as_deref()).unwrap();
        let v2 = embed_one(&e, &r, projection(&e).as_deref()).unwrap();
        assert_eq!(bits(&v1), bits(&v2));
        assert_eq!(v1.len(), 8);
        let norm: f32 = v1.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        // z = (1, -1, 0): each output is (s(0,j) - s(1,j)) / norm, so in {-2, 0, 2}/norm
        for x in &v1 {
            assert!(x.abs() < 1e-7 || (x.abs() - v1.iter().map(|y| y.abs()).fold(0.0, f32::max)).abs() < 1e-6);
        }
        let signs: Vec<i8> = (0..8).map(|j| projection_sign(7, 8, 0, j) as i8).collect();
        // pinned against an independent SplitMix64 in Python (bench/embedding_baseline.py)
        assert_eq!(signs, vec![1, 1, -1, -1, 1, 1, 1, 1], "the projection for seed 7 changed");
    }

    #[test]
    fn features_errors_are_permanent_and_precise() {
        let e = feat(4, &["a", "b"]);
        let p = projection(&e);
        let err = |f: &str| embed_one(&e, &row(f), p.as_deref()).unwrap_err();
        assert_eq!(err(r#"{"a": 1}"#), RowError::Permanent("feature \"b\" is missing".into()));
        assert_eq!(err(r#"{"a": 1, "b": "x"}"#), RowError::Permanent("feature \"b\" is not a number: string".into()));
        assert_eq!(err(r#"{"a": 1e308, "b": -1e308}"#).class(), "permanent");
        assert_eq!(
            err(r#"{"a": 0.1, "b": 0.1}"#),
            RowError::Permanent("these features gives a zero vector, which has no direction".into())
        );
        assert_eq!(err("[1]"), RowError::Permanent("features is not a json object but an array".into()));
    }

    #[test]
    fn features_missing_as_mean() {
        let e = Embedder::parse("f", 1, "features", 2, &json!({"features": ["a", "b"], "mean": [0, 0], "std": [1, 1], "missing": "mean"}))
            .unwrap();
        let v = embed_one(&e, &row(r#"{"a": 3}"#), None).unwrap();
        assert_eq!(bits(&v), bits(&[1.0, 0.0]));
    }

    #[test]
    fn series_is_z_normalised_and_reduced() {
        let e = Embedder::parse("s", 1, "series", 2, &json!({})).unwrap();
        let mut r = row("{}");
        r.series = Some(vec![1.0, 3.0, 5.0, 7.0]);
        let v = embed_one(&e, &r, None).unwrap();
        // mean 4, sd sqrt(5): z = (-3, -1, 1, 3)/sqrt5; PAA halves: -2/sqrt5, 2/sqrt5
        let s5 = 5f64.sqrt();
        assert_eq!(bits(&v), bits(&[(-2.0 / s5) as f32, (2.0 / s5) as f32]));
        assert_eq!(paa(&[1.0, 2.0], 4), vec![1.0, 1.0, 2.0, 2.0]);
        assert_eq!(paa(&[1.0, 2.0, 3.0], 2), vec![(1.0 + 0.5 * 2.0) / 1.5, (0.5 * 2.0 + 3.0) / 1.5]);
        r.series = Some(vec![2.0, 2.0, 2.0]);
        assert_eq!(embed_one(&e, &r, None).unwrap_err().class(), "permanent");
        r.series = Some(vec![1.0]);
        assert!(embed_one(&e, &r, None).unwrap_err().message().contains("at least 2"));
        r.series = Some(vec![1.0, f64::NAN]);
        assert!(embed_one(&e, &r, None).unwrap_err().message().contains("NaN"));
    }

    #[test]
    fn hashing_is_signed_feature_hashing_pinned() {
        let e = Embedder::parse("h", 1, "hashing", 16, &json!({"seed": 3})).unwrap();
        let r = row("{}");
        let v = embed_one(&e, &r, None).unwrap();
        let v2 = embed_one(&e, &r, None).unwrap();
        assert_eq!(bits(&v), bits(&v2));
        assert_eq!(v.len(), 16);
        // 9 tokens: "breakout above the 50d high volume surge" (7) + tag=long, tag=momentum
        let nonzero = v.iter().filter(|x| **x != 0.0).count();
        assert!((1..=9).contains(&nonzero));
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        let b = (murmur3_32(b"breakout", 3) as usize) % 16;
        assert!(v[b] != 0.0);
        let mut empty = row("{}");
        empty.rationale = None;
        empty.tags = vec![];
        assert!(embed_one(&e, &empty, None).unwrap_err().message().contains("zero vector"));
    }

    #[test]
    fn input_hash_covers_exactly_the_inputs_read() {
        let e = feat(4, &["a", "b"]);
        let h = |f: &str| input_hash(&e, &row(f)).unwrap();
        // key order, whitespace and unrelated keys do not matter; values do
        assert_eq!(h(r#"{"a": 1, "b": 2}"#), h(r#"{"b":2,"a":1, "z": "ignored"}"#));
        assert_ne!(h(r#"{"a": 1, "b": 2}"#), h(r#"{"a": 1, "b": 2.5}"#));
        // the features embedder does not read the rationale
        let mut r = row(r#"{"a": 1, "b": 2}"#);
        let before = input_hash(&e, &r).unwrap();
        r.rationale = Some("changed".into());
        r.tags.push("new".into());
        assert_eq!(before, input_hash(&e, &r).unwrap());
        // the hashing embedder does
        let he = Embedder::parse("h", 1, "hashing", 16, &json!({})).unwrap();
        assert_ne!(input_hash(&he, &row("{}")).unwrap(), input_hash(&he, &r).unwrap());
    }

    #[test]
    fn batch_skips_unchanged_rows_and_isolates_bad_ones() {
        let e = feat(4, &["a", "b"]);
        let good = row(r#"{"a": 1, "b": 2}"#);
        let h = input_hash(&e, &good).unwrap().to_vec();
        let rows = vec![
            (good.clone(), Some(h.clone()), false),
            (good.clone(), Some(h.clone()), true),
            (row(r#"{"a": 1}"#), None, false),
            (good.clone(), None, false),
        ];
        let out = embed_batch(&e, &rows);
        assert!(out[0].vector.is_none(), "unchanged input: no work");
        assert!(matches!(out[1].vector, Some(Ok(_))), "embedder changed: work");
        assert!(matches!(out[2].vector, Some(Err(RowError::Permanent(_)))));
        assert!(matches!(out[3].vector, Some(Ok(_))));
    }

    #[test]
    fn params_are_validated() {
        let bad = |kind: &str, dims: i32, p: Value| Embedder::parse("x", 1, kind, dims, &p).unwrap_err().to_string();
        assert_eq!(bad("bert", 4, json!({})), "unknown embedder kind \"bert\"");
        assert!(bad("features", 4, json!({"features": ["a"], "mean": [0, 1], "std": [1]})).contains("one value per feature"));
        assert!(bad("features", 4, json!({"features": ["a"], "mean": [0], "std": [0]})).contains("positive"));
        assert!(bad("features", 4, json!({"features": ["a", "a"], "mean": [0, 0], "std": [1, 1]})).contains("named twice"));
        assert!(bad("features", 4, json!({"features": ["a"], "mean": [0], "std": [1], "colour": 1})).contains("unknown field"));
        assert!(bad("hashing", 4, json!({"fields": ["body"]})).contains("unknown field \"body\""));
        assert!(bad("http", 4, json!({"url": "ftp://x", "model": "m"})).contains("http://"));
        assert!(bad("series", 0, json!({})).contains("between 1 and 2000"));
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify_status(429, "slow down", Some("2")),
            RowError::Retryable {
                msg: "provider answered 429 (body: 9 bytes, sha256 e4120a6471a6d365)".into(),
                retry_after_ms: Some(2000)
            }
        );
        assert_eq!(classify_status(503, "", None).class(), "retryable");
        assert_eq!(classify_status(400, "bad input", None).class(), "permanent");
        assert_eq!(classify_status(401, "", None).class(), "permanent");
        // the body never reaches a table: its length and a digest do
        let leak = classify_status(400, "{\"error\": \"bad key sk-live-123\", \"echo\": \"internal text\"}", None);
        assert!(!leak.message().contains("sk-live") && !leak.message().contains("internal text"), "{}", leak.message());
        assert!(check_provider_vectors(&[vec![1.0, 2.0]], 1, 3).unwrap_err().message().contains("2 dimensions, expected 3"));
        assert!(check_provider_vectors(&[vec![f32::NAN, 2.0]], 1, 2).unwrap_err().message().contains("NaN"));
        assert!(check_provider_vectors(&[], 1, 2).is_err());
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        assert_eq!(backoff_ms(1, 500, 60_000, 1.0, None), 500);
        assert_eq!(backoff_ms(3, 500, 60_000, 1.0, None), 2000);
        assert_eq!(backoff_ms(30, 500, 60_000, 1.0, None), 60_000);
        assert_eq!(backoff_ms(3, 500, 60_000, 0.5, None), 1000);
        assert_eq!(backoff_ms(1, 500, 60_000, 0.0, Some(3000)), 3000);
        assert_eq!(parse_retry_after(Some(" 1.5 ")), Some(1500));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    #[test]
    fn render_fills_the_template() {
        assert_eq!(
            render("{strategy} {symbol}: {rationale} [{tags}]", &row("{}")),
            "momentum_v1 AAPL: Breakout above the 50d high, volume surge [long, Momentum]"
        );
    }

    #[test]
    fn concurrency_halves_on_a_throttle_once_per_wait_and_grows_back() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut a = Aimd::new(8);
        assert_eq!(a.limit(), 8);
        assert!(a.may_send(t0));
        a.on_throttle(t0, Duration::from_millis(1000));
        assert_eq!(a.limit(), 4);
        // a second throttled answer inside the same wait does not halve again
        a.on_throttle(t0 + Duration::from_millis(10), Duration::from_millis(500));
        assert_eq!(a.limit(), 4);
        assert!(!a.may_send(t0 + Duration::from_millis(999)));
        assert!(a.may_send(t0 + Duration::from_millis(1000)));
        assert_eq!(a.last_wait_ms(), Some(500));
        // after the wait, a throttle halves again; successes add one each, up to the maximum
        a.on_throttle(t0 + Duration::from_millis(1200), Duration::from_millis(100));
        assert_eq!(a.limit(), 2);
        for _ in 0..20 {
            a.on_success();
        }
        assert_eq!(a.limit(), 8);
        let mut one = Aimd::new(0);
        one.on_throttle(t0, Duration::from_millis(1));
        assert_eq!(one.limit(), 1);
    }

    #[test]
    fn a_throttle_is_a_429_or_a_retry_after() {
        let ok: Result<Vec<f32>, RowError> = Ok(vec![1.0]);
        let r429 = classify_status(429, "slow down", None);
        let r503 = classify_status(503, "busy", Some("3"));
        let r500 = classify_status(500, "oops", None);
        assert_eq!(throttle_wait(&[ok.clone(), Err(r500.clone())]), None);
        assert_eq!(throttle_wait(&[ok.clone(), Err(r429)]), Some(std::time::Duration::from_secs(1)));
        assert_eq!(throttle_wait(&[Err(r500), Err(r503)]), Some(std::time::Duration::from_secs(3)));
        assert_eq!(throttle_wait(&[ok]), None);
    }
}
