//! The built-in local sentence model (embedder kind `model`): a BERT-shaped sentence-transformer
//! (all-MiniLM-L6-v2; gte-small, or any mean-pooling BERT model, from the same files) read from a folder holding
//! `config.json`, `tokenizer.json` and `model.safetensors`. Tokenized with Hugging Face's
//! `tokenizers` (pure Rust), truncated at 256 tokens as sentence-transformers does (the file's own
//! fixed 128-token padding is switched off: each batch pads to its longest text), sorted by
//! length into batches of whole texts (no padding: see [`bert`]), encoded by [`bert::Bert`] on
//! the caller's rayon pool, mean-pooled and L2-normalised. Pure: no PostgreSQL in here; the
//! embedder worker owns the only instance.

pub mod bert;

use rayon::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tokenizers::Tokenizer;

/// sentence-transformers' max_seq_length for these models
pub const MAX_TOKENS: usize = 256;
/// most tokens in one forward pass (the linear layers' matrices: 8,192 x 1,536 floats at most)
const BATCH_TOKENS: usize = 8192;

pub struct Model {
    bert: bert::Bert,
    tokenizer: Tokenizer,
    pub dims: usize,
    max_tokens: usize,
}

/// Checks a model's name: a folder directly under `quantops.model_dir`, never a path.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The hidden size (the vectors' dimension) a model's config.json states, read without loading
/// the model: what register_embedder checks.
pub fn configured_dims(model_dir: Option<&str>, name: &str) -> Result<usize, String> {
    let dir = model_dir.ok_or("quantops.model_dir is not set")?;
    if !valid_name(name) {
        return Err(format!("\"{name}\" is not a model folder name"));
    }
    let cfg = std::fs::read(Path::new(dir).join(name).join("config.json"))
        .map_err(|e| format!("model \"{name}\" has no readable config.json under quantops.model_dir ({})", e.kind()))?;
    let cfg: bert::Config = serde_json::from_slice(&cfg).map_err(|e| format!("model \"{name}\": config.json: {e}"))?;
    Ok(cfg.hidden_size)
}

impl Model {
    /// Loads the model in `dir` (about 90 MB and 0.1-0.5 s for all-MiniLM-L6-v2).
    pub fn load(dir: &Path) -> Result<Model, String> {
        let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("cannot read {}: {}", dir.join(f).display(), e.kind()));
        let cfg: bert::Config =
            serde_json::from_slice(&read("config.json")?).map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| format!("tokenizer.json: {e}"))?;
        // sentence-transformers truncates at max_seq_length (256 here, never past the positions)
        let max_tokens = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize)
            .unwrap_or(MAX_TOKENS)
            .min(cfg.max_position_embeddings);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| format!("tokenizer.json: {e}"))?;
        tokenizer.with_padding(None);
        let bert =
            bert::Bert::load(&cfg, &read("model.safetensors")?).map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        Ok(Model { bert, tokenizer, dims: cfg.hidden_size, max_tokens })
    }

    /// Embeds `texts` on `pool` (its threads must have PostgreSQL's signals blocked), one vector
    /// per text in order. Batches run in parallel, each sorted by length; `cancel` is looked at
    /// between batches (an Err then). Deterministic: the same text gives the same vector whatever
    /// else is in its batch, up to float rounding of the padded matmuls (cosine 1.000000).
    pub fn embed(&self, texts: &[&str], pool: &rayon::ThreadPool, cancel: &AtomicBool) -> Result<Vec<Vec<f32>>, String> {
        pool.install(|| {
            let ids: Vec<Vec<u32>> = texts
                .par_iter()
                .map(|t| self.tokenizer.encode(*t, true).map(|e| e.get_ids().to_vec()).map_err(|e| format!("tokenizing failed: {e}")))
                .collect::<Result<_, _>>()?;
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by_key(|&i| ids[i].len());
            let mut out = vec![Vec::new(); texts.len()];
            let mut rest = &order[..];
            while !rest.is_empty() {
                if cancel.load(Ordering::Relaxed) {
                    return Err("cancelled".to_string());
                }
                let mut n = 1;
                let mut tokens = ids[rest[0]].len();
                while n < rest.len() && tokens + ids[rest[n]].len() <= BATCH_TOKENS {
                    tokens += ids[rest[n]].len();
                    n += 1;
                }
                let (b, r) = rest.split_at(n);
                rest = r;
                let batch: Vec<&[u32]> = b.iter().map(|&i| ids[i].as_slice()).collect();
                let vecs = self.bert.embed(&batch).map_err(|e| format!("the model failed: {e}"))?;
                for (&i, v) in b.iter().zip(vecs) {
                    out[i] = v;
                }
            }
            Ok(out)
        })
    }

    /// How many tokens a text becomes (truncated), for tests and docs.
    pub fn tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, true).map(|e| e.get_ids().len()).unwrap_or(0).min(self.max_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// scripts/bootstrap.sh installs the model here (or QUANTOPS_MODEL_DIR names another copy)
    fn model() -> Model {
        let dir = std::env::var("QUANTOPS_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2"));
        assert!(dir.join("model.safetensors").is_file(), "{} has no model: run scripts/bootstrap.sh", dir.display());
        Model::load(&dir).unwrap()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn the_model_reproduces_sentence_transformers_on_200_sentences() {
        // tests/model/expected.f32: the vectors of tests/model/sentences.txt computed independently
        // (bench/model/onnx_reference.py: ONNX Runtime on the same weights, Hugging Face's
        // tokenizers in Python, sentence-transformers' pooling), checked there against numpy
        let m = model();
        assert_eq!(m.dims, 384);
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("tests/model/sentences.txt")).unwrap();
        let sentences: Vec<&str> = text.lines().collect();
        assert_eq!(sentences.len(), 200);
        let raw = std::fs::read(root.join("tests/model/expected.f32")).unwrap();
        let expected: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(expected.len(), 200 * 384);
        let two = crate::threads::build(2, "test-model").unwrap();
        let got = m.embed(&sentences, &two, &AtomicBool::new(false)).unwrap();
        let worst = got.iter().enumerate().map(|(i, v)| (cosine(v, &expected[i * 384..(i + 1) * 384]), i)).fold((1.0, 0), |a, b| {
            if b.0 < a.0 {
                b
            } else {
                a
            }
        });
        assert!(worst.0 >= 0.9999, "sentence {} ({:?}) has cosine {}", worst.1, sentences[worst.1], worst.0);
        // unit length, as sentence-transformers normalises
        assert!(got.iter().all(|v| (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5));
        // the long ones are truncated at 256 tokens, as sentence-transformers does
        assert_eq!(m.tokens(sentences[0]), MAX_TOKENS);
        // a text's vector does not depend on its batch or on the threads
        let one = crate::threads::build(1, "test-model-1").unwrap();
        let alone = m.embed(&sentences[5..6], &one, &AtomicBool::new(false)).unwrap();
        assert!(cosine(&alone[0], &got[5]) > 0.999999);
        // a cancel is seen between batches
        let many: Vec<&str> = sentences.iter().cycle().take(2000).copied().collect();
        assert_eq!(m.embed(&many, &two, &AtomicBool::new(true)).unwrap_err(), "cancelled");
    }

    #[test]
    fn model_names_are_folder_names_never_paths() {
        for bad in ["", ".", "..", "../etc", "a/b", "/abs", "x y", "a\0b", &"m".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["all-MiniLM-L6-v2", "gte-small", "bge_small.en"] {
            assert!(valid_name(good));
        }
        assert!(configured_dims(None, "all-MiniLM-L6-v2").unwrap_err().contains("quantops.model_dir is not set"));
        assert!(configured_dims(Some("/nonexistent"), "x").unwrap_err().contains("no readable config.json"));
    }
}
