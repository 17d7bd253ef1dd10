//! A BERT encoder (the shape of all-MiniLM-L6-v2 and gte-small) in plain f32 arrays,
//! with `gemm` for the matrix products: embeddings, `layers` x (self-attention, feed-forward with
//! exact GELU), each with its residual and LayerNorm, read from the model's own safetensors names.
//!
//! A batch is its texts' tokens end to end, without padding: the linear layers see every token of
//! the batch as one matrix, and attention runs per text over that text's own tokens, which is what
//! the padded, masked computation of transformers computes for the real tokens (masked keys get
//! weight exp(-inf) = 0 there). Biases are written first and the product accumulated onto them.
//! Pure: no PostgreSQL in here.

use gemm::Parallelism;
use rayon::prelude::*;
use std::collections::HashMap;

/// What config.json says of the shape (the fields quantops reads; others are ignored).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}

/// A linear layer: `weight` [out, in] row-major (PyTorch's layout), `bias` [out].
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out: usize,
    inp: usize,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// query, key and value in one [3H, H] product
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    inter: Linear,
    out: Linear,
    out_norm: Norm,
}

pub struct Bert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    eps: f32,
    vocab: usize,
    positions: usize,
}

/// The tensors of a safetensors file, as f32 (F32 files only).
fn read_safetensors(bytes: &[u8]) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>, String> {
    let n = u64::from_le_bytes(bytes.get(..8).ok_or("not a safetensors file")?.try_into().map_err(|_| "not a safetensors file")?) as usize;
    let header = bytes.get(8..8 + n).ok_or("truncated safetensors header")?;
    let data = &bytes[8 + n..];
    let meta: HashMap<String, serde_json::Value> = serde_json::from_slice(header).map_err(|e| format!("safetensors header: {e}"))?;
    let mut out = HashMap::new();
    for (name, m) in meta {
        if name == "__metadata__" {
            continue;
        }
        let dtype = m["dtype"].as_str().unwrap_or("");
        let shape: Vec<usize> =
            m["shape"].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect()).unwrap_or_default();
        let off: Vec<usize> =
            m["data_offsets"].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect()).unwrap_or_default();
        if dtype != "F32" {
            // ids (position_ids, I64) are not weights; any other non-F32 weight is refused below
            continue;
        }
        let raw = match off.as_slice() {
            [a, b] if a <= b && *b <= data.len() => &data[*a..*b],
            _ => return Err(format!("safetensors: tensor {name} lies outside the file")),
        };
        if raw.len() != 4 * shape.iter().product::<usize>() {
            return Err(format!("safetensors: tensor {name} has the wrong size for its shape"));
        }
        out.insert(name, (shape, raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()));
    }
    Ok(out)
}

impl Bert {
    pub fn load(cfg: &Config, safetensors: &[u8]) -> Result<Bert, String> {
        if cfg.hidden_act != "gelu" {
            return Err(format!("hidden_act \"{}\" is not supported (only BERT's exact \"gelu\")", cfg.hidden_act));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", cfg.hidden_size, cfg.num_attention_heads));
        }
        let mut t = read_safetensors(safetensors)?;
        // sentence-transformers' files name the tensors with or without a "bert." prefix
        let prefix = if t.contains_key("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let full = format!("{prefix}{name}");
            match t.remove(&full) {
                Some((s, v)) if s == shape => Ok(v),
                Some((s, _)) => Err(format!("tensor {full} has shape {s:?}, expected {shape:?}")),
                None => Err(format!("tensor {full} (F32) is missing")),
            }
        };
        let mut linear = |name: &str, out: usize, inp: usize| -> Result<Linear, String> {
            Ok(Linear { weight: take(&format!("{name}.weight"), &[out, inp])?, bias: take(&format!("{name}.bias"), &[out])?, out, inp })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let (q, k, v) = (
                linear(&format!("{p}.attention.self.query"), h, h)?,
                linear(&format!("{p}.attention.self.key"), h, h)?,
                linear(&format!("{p}.attention.self.value"), h, h)?,
            );
            let qkv =
                Linear { weight: [q.weight, k.weight, v.weight].concat(), bias: [q.bias, k.bias, v.bias].concat(), out: 3 * h, inp: h };
            let attn_out = linear(&format!("{p}.attention.output.dense"), h, h)?;
            let inter = linear(&format!("{p}.intermediate.dense"), i, h)?;
            let out = linear(&format!("{p}.output.dense"), h, i)?;
            layers.push((qkv, attn_out, inter, out, p));
        }
        let mut norm = |name: &str| -> Result<Norm, String> {
            Ok(Norm { gamma: take(&format!("{name}.weight"), &[h])?, beta: take(&format!("{name}.bias"), &[h])? })
        };
        let mut built = Vec::with_capacity(layers.len());
        for (qkv, attn_out, inter, out, p) in layers {
            built.push(Layer {
                qkv,
                attn_out,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                inter,
                out,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let emb_norm = norm("embeddings.LayerNorm")?;
        let token_type = take("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?;
        Ok(Bert {
            word: take("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: take("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?,
            token_type0: token_type[..h].to_vec(),
            norm: emb_norm,
            layers: built,
            heads: cfg.num_attention_heads,
            hidden: h,
            eps: cfg.layer_norm_eps as f32,
            vocab: cfg.vocab_size,
            positions: cfg.max_position_embeddings,
        })
    }

    /// The texts' token ids (each at most max_position_embeddings long, none empty) to their
    /// pooled, L2-normalised sentence vectors, as sentence-transformers computes them: the mean of
    /// the last hidden state over the text's tokens (or the first token's state, for CLS
    /// pooling), divided by its norm (at least 1e-12). Runs on the current rayon pool.
    pub fn embed(&self, texts: &[&[u32]], pooling: super::Pooling) -> Result<Vec<Vec<f32>>, String> {
        let h = self.hidden;
        let starts: Vec<usize> = texts
            .iter()
            .scan(0, |acc, t| {
                let s = *acc;
                *acc += t.len();
                Some(s)
            })
            .collect();
        let m: usize = texts.iter().map(|t| t.len()).sum();
        if texts.iter().any(|t| t.is_empty() || t.len() > self.positions) {
            return Err("a text has no tokens or more than the model's positions".into());
        }
        if texts.iter().flat_map(|t| t.iter()).any(|&id| id as usize >= self.vocab) {
            return Err("a token id is outside the model's vocabulary".into());
        }
        let mut x = vec![0f32; m * h];
        x.par_chunks_mut(h).enumerate().for_each(|(row, out)| {
            let (ti, pos) = locate(&starts, texts, row);
            let id = texts[ti][pos] as usize;
            let (w, p) = (&self.word[id * h..(id + 1) * h], &self.position[pos * h..(pos + 1) * h]);
            for j in 0..h {
                out[j] = w[j] + p[j] + self.token_type0[j];
            }
            layer_norm(out, &self.norm, self.eps);
        });
        let threads = rayon::current_num_threads();
        for l in &self.layers {
            let qkv = linear(&x, m, &l.qkv, threads);
            let ctx = self.attention(&qkv, texts, &starts, m);
            let mut a = linear(&ctx, m, &l.attn_out, threads);
            add_norm(&mut a, &x, &l.attn_norm, self.eps, h);
            let mut inter = linear(&a, m, &l.inter, threads);
            inter.par_chunks_mut(4096).for_each(gelu_slice);
            let mut o = linear(&inter, m, &l.out, threads);
            add_norm(&mut o, &a, &l.out_norm, self.eps, h);
            x = o;
        }
        Ok(texts
            .iter()
            .zip(&starts)
            .map(|(t, &s)| {
                let mut v = vec![0f32; h];
                let n = match pooling {
                    super::Pooling::Mean => t.len(),
                    super::Pooling::Cls => 1,
                };
                for row in x[s * h..(s + n) * h].chunks_exact(h) {
                    v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                let n = n as f32;
                v.iter_mut().for_each(|a| *a /= n);
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
                v
            })
            .collect())
    }

    /// Self-attention per text and head: softmax(Q K^T / sqrt(d)) V, into [m, H].
    fn attention(&self, qkv: &[f32], texts: &[&[u32]], starts: &[usize], m: usize) -> Vec<f32> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let parts: Vec<(usize, usize, Vec<f32>)> = (0..texts.len() * heads)
            .into_par_iter()
            .map(|job| {
                let (ti, head) = (job / heads, job % heads);
                let (s, n) = (starts[ti], texts[ti].len());
                let q = &qkv[s * 3 * h + head * d..];
                let k = &qkv[s * 3 * h + h + head * d..];
                let v = &qkv[s * 3 * h + 2 * h + head * d..];
                let mut scores = vec![0f32; n * n];
                // SAFETY: q and k address n rows of d floats with row stride 3H inside qkv (the
                // text's own rows); scores holds n x n floats; no other thread writes these
                unsafe {
                    gemm::gemm(
                        n,
                        n,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        q.as_ptr(),
                        1,
                        (3 * h) as isize,
                        k.as_ptr(),
                        (3 * h) as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                scores.chunks_exact_mut(n).for_each(softmax);
                let mut out = vec![0f32; n * d];
                // SAFETY: scores is n x n; v addresses n rows of d floats with row stride 3H; out is n x d
                unsafe {
                    gemm::gemm(
                        n,
                        d,
                        n,
                        out.as_mut_ptr(),
                        1,
                        d as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        v.as_ptr(),
                        1,
                        (3 * h) as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                (s, head, out)
            })
            .collect();
        let mut ctx = vec![0f32; m * h];
        for (s, head, out) in parts {
            for (r, row) in out.chunks_exact(d).enumerate() {
                ctx[(s + r) * h + head * d..(s + r) * h + (head + 1) * d].copy_from_slice(row);
            }
        }
        ctx
    }
}

/// Which text and position a row of the batch is.
fn locate(starts: &[usize], texts: &[&[u32]], row: usize) -> (usize, usize) {
    let ti = starts.partition_point(|&s| s <= row) - 1;
    debug_assert!(row - starts[ti] < texts[ti].len());
    (ti, row - starts[ti])
}

/// x [m, inp] times the layer's weight transposed, plus its bias: [m, out].
fn linear(x: &[f32], m: usize, l: &Linear, threads: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(m * l.out);
    for _ in 0..m {
        y.extend_from_slice(&l.bias);
    }
    let par = if threads > 1 && m * l.out * l.inp > 1 << 18 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: x is m x inp row-major, weight out x inp row-major (read as its transpose: element
    // (k, n) at n * inp + k), y m x out row-major and initialised with the bias (read_dst)
    unsafe {
        gemm::gemm(
            m,
            l.out,
            l.inp,
            y.as_mut_ptr(),
            1,
            l.out as isize,
            true,
            x.as_ptr(),
            1,
            l.inp as isize,
            l.weight.as_ptr(),
            l.inp as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    y
}

/// y = LayerNorm(y + residual), row by row.
fn add_norm(y: &mut [f32], residual: &[f32], n: &Norm, eps: f32, h: usize) {
    y.par_chunks_mut(h).zip(residual.par_chunks(h)).for_each(|(row, r)| {
        row.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        layer_norm(row, n, eps);
    });
}

fn layer_norm(row: &mut [f32], n: &Norm, eps: f32) {
    let len = row.len() as f32;
    let mean = row.iter().sum::<f32>() / len;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / len;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&n.gamma).zip(&n.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// GELU over a slice, in the widest vectors the CPU has (the same arithmetic at every width).
fn gelu_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above)
            return unsafe { gelu_avx512(xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above)
            return unsafe { gelu_avx2(xs) };
        }
    }
    xs.iter_mut().for_each(|v| *v = gelu_erf(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gelu_avx512(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = gelu_erf(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_avx2(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = gelu_erf(*v));
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// e^x for x <= 88, branch-free (so loops over it vectorise): x = n ln 2 + r, |r| <= ln 2 / 2,
/// e^r by its Taylor polynomial to r^7 (relative error below 2e-7), times 2^n from the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round to nearest without a call (SSE2 has no rounding instruction): add and subtract 1.5 x 2^23
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// BERT's exact GELU, x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, with erf by Abramowitz and Stegun
/// 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let e = 1.0 - poly * exp(-a * a);
    let erf = if z < 0.0 { -e } else { e };
    0.5 * x * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_gelu_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 / 50.0;
            let (a, b) = (exp(x), (x as f64).exp());
            assert!(((a as f64 - b) / b).abs() < 5e-7, "exp({x}) = {a}, not {b}");
            let g = gelu_erf(x) as f64;
            let want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((g - want).abs() < 1e-6 * (1.0 + want.abs()), "gelu({x}) = {g}, not {want}");
        }
        assert!(exp(-1000.0) < 1e-37);
    }

    /// erf by its Maclaurin series (|x| < 3) or the continued fraction of erfc, in f64: a
    /// reference independent of the approximation under test
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            x.signum() * (1.0 - erfc)
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = vec![1.0, 2.0, 3.0, -50.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[2] > r[1] && r[1] > r[0] && r[3] < 1e-20);
    }
}
