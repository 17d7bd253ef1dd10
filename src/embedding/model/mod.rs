//! The built-in local sentence model (embedder kind `model`): a BERT-shaped sentence-transformer
//! (all-MiniLM-L6-v2, gte-small, bge-small: any BERT model that pools by mean or by its CLS token)
//! read from a folder holding `config.json`, `tokenizer.json` and `model.safetensors` (and, as
//! sentence-transformers saves it, `modules.json` and the Pooling module's folder). Tokenized with
//! Hugging Face's `tokenizers` (pure Rust), truncated at 256 tokens as sentence-transformers does
//! (the file's own fixed 128-token padding is switched off: each batch pads to its longest text),
//! sorted by length into batches of whole texts (no padding: see [`bert`]), encoded by
//! [`bert::Bert`] on the caller's rayon pool, pooled as the model's Pooling module says (mean or
//! CLS) and L2-normalised. Pure: no PostgreSQL in here; the embedder worker owns the only instance.

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
    pooling: Pooling,
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
/// the model: what register_embedder checks. An Err(Unsupported) when the model pools in a way
/// quantops does not compute.
pub fn configured_dims(model_dir: Option<&str>, name: &str) -> Result<usize, ModelError> {
    let dir = model_dir.ok_or(ModelError::Unavailable("quantops.model_dir is not set".into()))?;
    if !valid_name(name) {
        return Err(ModelError::Unavailable(format!("\"{name}\" is not a model folder name")));
    }
    let folder = Path::new(dir).join(name);
    let cfg = std::fs::read(folder.join("config.json")).map_err(|e| {
        ModelError::Unavailable(format!("model \"{name}\" has no readable config.json under quantops.model_dir ({})", e.kind()))
    })?;
    let cfg: bert::Config =
        serde_json::from_slice(&cfg).map_err(|e| ModelError::Unavailable(format!("model \"{name}\": config.json: {e}")))?;
    pooling(&folder).map_err(|e| ModelError::Unsupported(format!("model \"{name}\": {e}")))?;
    Ok(cfg.hidden_size)
}

/// Why a model cannot be used: its files are missing or unreadable, or it asks for what quantops
/// does not compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    Unavailable(String),
    Unsupported(String),
}

/// How a sentence-transformer makes one vector of its tokens' last hidden states: their mean
/// (all-MiniLM-L6-v2, gte-small) or the first token's, [CLS] (the bge models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// The pooling a model folder asks for, as sentence-transformers reads it: `modules.json` names
/// the Pooling module's folder (`1_Pooling` when there is no modules.json), whose `config.json`
/// sets the `pooling_mode_*` flags (or, in newer files, `pooling_mode`). No Pooling module at all:
/// mean, the sentence-transformers default for a plain BERT checkpoint. Max, mean-sqrt-len,
/// weighted-mean and last-token pooling, or several modes at once, are refused: quantops would
/// compute other vectors than the model's.
pub fn pooling(folder: &Path) -> Result<Pooling, String> {
    let module = match std::fs::read(folder.join("modules.json")) {
        Ok(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| format!("modules.json: {e}"))?;
            let modules = v.as_array().ok_or("modules.json is not a list of modules")?;
            match modules.iter().find(|m| m["type"].as_str().is_some_and(|t| t.ends_with(".Pooling"))) {
                Some(m) => Some(m["path"].as_str().ok_or("modules.json: the Pooling module has no path")?.to_string()),
                None => None,
            }
        }
        Err(_) => Some("1_Pooling".to_string()),
    };
    let Some(module) = module else { return Ok(Pooling::Mean) };
    if !module.is_empty() && !module.split('/').all(valid_name) {
        return Err(format!("modules.json: the Pooling module's path \"{module}\" is not a folder of the model"));
    }
    let cfg = match std::fs::read(folder.join(&module).join("config.json")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pooling::Mean),
        Err(e) => return Err(format!("{module}/config.json: {}", e.kind())),
    };
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).map_err(|e| format!("{module}/config.json: {e}"))?;
    let modes: Vec<&str> = match cfg["pooling_mode"].as_str() {
        Some(m) => vec![m],
        None => [
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
            ("pooling_mode_weightedmean_tokens", "weightedmean"),
            ("pooling_mode_lasttoken", "lasttoken"),
        ]
        .into_iter()
        .filter(|(k, _)| cfg[*k].as_bool() == Some(true))
        .map(|(_, m)| m)
        .collect(),
    };
    match modes.as_slice() {
        ["mean"] => Ok(Pooling::Mean),
        ["cls"] => Ok(Pooling::Cls),
        [] => Err(format!("{module}/config.json sets no pooling mode")),
        other => Err(format!("it pools by {} ({module}/config.json); quantops computes mean or CLS pooling", other.join(" + "))),
    }
}

impl Model {
    /// Loads the model in `dir` (about 90 MB and 0.1-0.5 s for all-MiniLM-L6-v2).
    pub fn load(dir: &Path) -> Result<Model, String> {
        let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("cannot read {}: {}", dir.join(f).display(), e.kind()));
        let cfg: bert::Config =
            serde_json::from_slice(&read("config.json")?).map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let pooling = pooling(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
        Ok(Model { bert, tokenizer, dims: cfg.hidden_size, max_tokens, pooling })
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
                let vecs = self.bert.embed(&batch, self.pooling).map_err(|e| format!("the model failed: {e}"))?;
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
        let unavailable = |e: ModelError| match e {
            ModelError::Unavailable(m) => m,
            other => panic!("{other:?}"),
        };
        assert!(unavailable(configured_dims(None, "all-MiniLM-L6-v2").unwrap_err()).contains("quantops.model_dir is not set"));
        assert!(unavailable(configured_dims(Some("/nonexistent"), "x").unwrap_err()).contains("no readable config.json"));
    }

    /// A model folder of its own under the system's temp dir, with these files.
    fn folder(files: &[(&str, &str)]) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quantops-pooling-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const MODULES: &str = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;

    #[test]
    fn the_pooling_is_read_as_sentence_transformers_reads_it() {
        let flags = |cls: bool, mean: bool, max: bool| {
            format!(
                r#"{{"word_embedding_dimension": 384, "pooling_mode_cls_token": {cls}, "pooling_mode_mean_tokens": {mean},
                    "pooling_mode_max_tokens": {max}, "pooling_mode_mean_sqrt_len_tokens": false}}"#
            )
        };
        // all-MiniLM-L6-v2 as bootstrap.sh installs it: mean
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2");
        if shipped.join("modules.json").is_file() {
            assert_eq!(pooling(&shipped), Ok(Pooling::Mean));
        }
        // bge-small's files: CLS
        assert_eq!(pooling(&folder(&[("modules.json", MODULES), ("1_Pooling/config.json", &flags(true, false, false))])), Ok(Pooling::Cls));
        assert_eq!(
            pooling(&folder(&[("modules.json", MODULES), ("1_Pooling/config.json", &flags(false, true, false))])),
            Ok(Pooling::Mean)
        );
        // newer files name the mode
        assert_eq!(pooling(&folder(&[("1_Pooling/config.json", r#"{"pooling_mode": "cls"}"#)])), Ok(Pooling::Cls));
        // a plain checkpoint, no Pooling module: mean, sentence-transformers' default
        assert_eq!(pooling(&folder(&[])), Ok(Pooling::Mean));
        let no_pooling = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]"#;
        assert_eq!(pooling(&folder(&[("modules.json", no_pooling)])), Ok(Pooling::Mean));
        // the Pooling module wherever modules.json puts it
        let elsewhere = MODULES.replace("\"1_Pooling\"", "\"pool\"");
        assert_eq!(pooling(&folder(&[("modules.json", &elsewhere), ("pool/config.json", &flags(true, false, false))])), Ok(Pooling::Cls));
        // refused: what quantops does not compute, several modes, none, a path out of the folder
        let max = pooling(&folder(&[("1_Pooling/config.json", &flags(false, false, true))])).unwrap_err();
        assert!(max.contains("pools by max") && max.contains("quantops computes mean or CLS pooling"), "{max}");
        let both = pooling(&folder(&[("1_Pooling/config.json", &flags(true, true, false))])).unwrap_err();
        assert!(both.contains("pools by cls + mean"), "{both}");
        let none = pooling(&folder(&[("1_Pooling/config.json", &flags(false, false, false))])).unwrap_err();
        assert!(none.contains("sets no pooling mode"), "{none}");
        let escape = MODULES.replace("\"1_Pooling\"", "\"../../etc\"");
        let escape = pooling(&folder(&[("modules.json", &escape)])).unwrap_err();
        assert!(escape.contains("is not a folder of the model"), "{escape}");
        // register_embedder's check says which: Unsupported (0A000), not Unavailable (55000)
        let dir = folder(&[
            (
                "config.json",
                r#"{"vocab_size": 10, "hidden_size": 384, "num_hidden_layers": 1, "num_attention_heads": 12,
                               "intermediate_size": 1536, "max_position_embeddings": 512}"#,
            ),
            ("1_Pooling/config.json", &flags(false, false, true)),
        ]);
        let (parent, name) = (dir.parent().unwrap().to_str().unwrap(), dir.file_name().unwrap().to_str().unwrap());
        assert!(matches!(configured_dims(Some(parent), name), Err(ModelError::Unsupported(m)) if m.contains("pools by max")));
        std::fs::remove_file(dir.join("1_Pooling/config.json")).unwrap();
        assert_eq!(configured_dims(Some(parent), name), Ok(384));
    }

    /// CLS pooling takes the first token's state: for a one-token text it is the mean too, and for
    /// longer texts it differs from the mean (the same weights, both normalised).
    #[test]
    fn cls_pooling_is_the_first_tokens_state() {
        let m = model();
        let ids = m.tokenizer.encode("gold rallied on safe-haven demand", true).unwrap().get_ids().to_vec();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (mean, cls) = pool.install(|| (m.bert.embed(&[&ids], Pooling::Mean).unwrap(), m.bert.embed(&[&ids], Pooling::Cls).unwrap()));
        assert!(cosine(&mean[0], &cls[0]) < 0.99, "CLS and mean pooling gave the same vector");
        let norm: f32 = cls[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        let one = [ids[0]];
        let (mean1, cls1) = pool.install(|| (m.bert.embed(&[&one], Pooling::Mean).unwrap(), m.bert.embed(&[&one], Pooling::Cls).unwrap()));
        assert_eq!(mean1, cls1);
    }
}
