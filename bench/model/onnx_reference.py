#!/usr/bin/env python3
"""An independent all-MiniLM-L6-v2 in Python: the model's safetensors exported to an ONNX graph
(built here with onnx.helper, fp32, no change to any weight), run by ONNX Runtime, tokenized by
Hugging Face's `tokenizers`, mean-pooled and L2-normalised exactly as sentence-transformers does
(max_seq_length 256, attention-masked mean). It serves two purposes:

  expected MODEL_DIR IN OUT   the expected vectors of the quantops test (IN one sentence per line;
                              OUT raw little-endian f32, one row of 384 per sentence)
  bench MODEL_DIR IN THREADS  sentences per second of ONNX Runtime on THREADS intra-op threads,
                              batches of 32 sorted by length (as quantops does); prints one JSON line

The graph is checked against a plain numpy forward pass of the same weights on every run.
Needs: onnx onnxruntime tokenizers numpy safetensors (bench/model/venv.sh installs them).
"""
import json, math, sys, time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256
BATCH = 32


def load(model_dir):
    cfg = json.load(open(f"{model_dir}/config.json"))
    w = load_file(f"{model_dir}/model.safetensors")
    w = {k.removeprefix("bert."): v for k, v in w.items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    return cfg, w, tok


def graph(cfg, w):
    H, heads, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    eps, d = cfg["layer_norm_eps"], cfg["hidden_size"] // cfg["num_attention_heads"]
    inits, nodes = [], []
    n = [0]

    def name(p):
        n[0] += 1
        return f"{p}_{n[0]}"

    def const(arr, p="c"):
        nm = name(p)
        inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(t, ins, **kw):
        out = name(t)
        nodes.append(helper.make_node(t, ins, [out], **kw))
        return out

    def linear(x, prefix):
        return op("Add", [op("MatMul", [x, const(w[prefix + ".weight"].T.copy())]), const(w[prefix + ".bias"])])

    def ln(x, prefix):
        return op("LayerNormalization", [x, const(w[prefix + ".weight"]), const(w[prefix + ".bias"])], axis=-1, epsilon=eps)

    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    seq = op("Gather", [op("Shape", [ids]), const(np.array(1, dtype=np.int64))], axis=0)
    pos = op("Range", [const(np.array(0, dtype=np.int64)), seq, const(np.array(1, dtype=np.int64))])
    x = op("Add", [op("Gather", [const(w["embeddings.word_embeddings.weight"]), ids]),
                   op("Gather", [const(w["embeddings.position_embeddings.weight"]), pos])])
    x = op("Add", [x, op("Gather", [const(w["embeddings.token_type_embeddings.weight"]), types])])
    x = ln(x, "embeddings.LayerNorm")
    # additive mask: 0 where attended, a large negative where padded, shape [B, 1, 1, S]
    mf = op("Cast", [mask], to=TensorProto.FLOAT)
    add_mask = op("Mul", [op("Sub", [const(np.array(1.0, dtype=np.float32)), mf]), const(np.array(np.finfo(np.float32).min, dtype=np.float32))])
    add_mask = op("Unsqueeze", [add_mask, const(np.array([1, 2], dtype=np.int64))])
    split = const(np.array([0, 0, heads, d], dtype=np.int64))
    merge = const(np.array([0, 0, H], dtype=np.int64))
    scale = const(np.array(1.0 / math.sqrt(d), dtype=np.float32))
    for i in range(L):
        p = f"encoder.layer.{i}"
        q, k, v = (op("Transpose", [op("Reshape", [linear(x, f"{p}.attention.self.{t}"), split])], perm=[0, 2, 1, 3]) for t in ("query", "key", "value"))
        s = op("Add", [op("Mul", [op("MatMul", [q, op("Transpose", [k], perm=[0, 1, 3, 2])]), scale]), add_mask])
        ctx = op("MatMul", [op("Softmax", [s], axis=-1), v])
        ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge])
        x = ln(op("Add", [linear(ctx, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense")
        # exact GELU: 0.5 x (1 + erf(x / sqrt 2))
        g = op("Mul", [op("Mul", [h, const(np.array(0.5, dtype=np.float32))]),
                       op("Add", [const(np.array(1.0, dtype=np.float32)), op("Erf", [op("Div", [h, const(np.array(math.sqrt(2.0), dtype=np.float32))])])])])
        x = ln(op("Add", [linear(g, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ins = [helper.make_tensor_value_info(nm, TensorProto.INT64, ["B", "S"]) for nm in (ids, mask, types)]
    out = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["B", "S", H])]
    m = helper.make_model(helper.make_graph(nodes, "minilm", ins, out, inits), opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def numpy_forward(cfg, w, ids, mask):
    H, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = H // heads
    from math import erf
    verf = np.vectorize(erf)

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    B, S = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:S] + w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x.astype(np.float64), "embeddings.LayerNorm")
    add = (1.0 - mask[:, None, None, :]) * -1e30
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{t}").reshape(B, S, heads, d).transpose(0, 2, 1, 3) for t in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + add
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, S, H)
        x = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = lin(x, f"{p}.intermediate.dense")
        x = ln(lin(0.5 * h * (1.0 + verf(h / math.sqrt(2.0))), f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    return x


def batches(tok, texts):
    enc = tok.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: len(enc[i].ids))
    for b in range(0, len(order), BATCH):
        idx = order[b:b + BATCH]
        S = max(len(enc[i].ids) for i in idx)
        ids = np.zeros((len(idx), S), dtype=np.int64)
        mask = np.zeros((len(idx), S), dtype=np.int64)
        for r, i in enumerate(idx):
            ids[r, :len(enc[i].ids)] = enc[i].ids
            mask[r, :len(enc[i].ids)] = 1
        yield idx, ids, mask


def pool(hidden, mask):
    m = mask[:, :, None].astype(hidden.dtype)
    v = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def embed(sess, tok, texts):
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for idx, ids, mask in batches(tok, texts):
        h = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        out[idx] = pool(h, mask)
    return out


def check_against_numpy(cfg, w, tok, sess, texts):
    # the ONNX graph and a float64 numpy forward pass agree on a few sentences
    for idx, ids, mask in batches(tok, texts[:8]):
        a = pool(sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0], mask)
        b = pool(numpy_forward(cfg, w, ids, mask), mask)
        cos = (a * b).sum(1)
        assert cos.min() > 0.99999, f"onnx graph and numpy disagree: {cos.min()}"


def main():
    mode, model_dir, path = sys.argv[1], sys.argv[2], sys.argv[3]
    texts = [l.rstrip("\n") for l in open(path, encoding="utf-8")]
    cfg, w, tok = load(model_dir)
    model = graph(cfg, w)
    if mode == "expected":
        sess = session(model, 1)
        check_against_numpy(cfg, w, tok, sess, texts)
        embed(sess, tok, texts).astype("<f4").tofile(sys.argv[4])
    elif mode == "bench":
        threads = int(sys.argv[4])
        sess = session(model, threads)
        check_against_numpy(cfg, w, tok, sess, texts)
        embed(sess, tok, texts[:64])  # warm up
        best = None
        for _ in range(3):
            t = time.perf_counter()
            embed(sess, tok, texts)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        print(json.dumps({"engine": "onnxruntime " + ort.__version__, "threads": threads, "sentences": len(texts), "seconds": round(best, 4), "per_s": round(len(texts) / best, 1)}))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
