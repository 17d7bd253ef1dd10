#!/usr/bin/env python3
"""Baseline B of the embedding-refresh benchmark: the seed's way, an external Python worker.

It selects stale rows (embedding is null, keyset-paginated by id), computes the same `features` embedding as quantops
(standardise with the stored statistics, project with the fixed +-1 SplitMix64 matrix, L2-normalise)
with numpy, and writes back in batches as fast as Python can: binary COPY (built with a numpy
structured array) into a temporary table, then UPDATE ... FROM.

usage: embedding_baseline.py DSN PARAMS_JSON DIMS [BATCH]
prints: rows seconds
"""
import json, sys, time
import numpy as np
import psycopg

M64 = (1 << 64) - 1


def splitmix64(seed, idx):
    """Vectorised SplitMix64, as in src/hash.rs: value i of the stream seeded with `seed`."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (idx.astype(np.uint64) + np.uint64(1)) * gamma
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def projection(seed, n, d):
    idx = np.arange(n * d, dtype=np.uint64)
    top = splitmix64(seed, idx) >> np.uint64(63)
    return np.where(top == 0, 1.0, -1.0).reshape(n, d)


def main():
    dsn, params, dims = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    names, mean, std = params["features"], np.array(params["mean"]), np.array(params["std"])
    proj = projection(params.get("seed", 0), len(names), dims) if len(names) != dims else None
    row_dtype = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                          ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (dims,))])
    t0 = time.perf_counter()
    total, last = 0, 0
    with psycopg.connect(dsn, autocommit=False) as conn:
        with conn.cursor() as cur:
            cur.execute("create temp table tmp_emb (id bigint, embedding extensions.vector(%d)) on commit drop" % dims)
        while True:
            with conn.cursor() as cur:
                # keyset pagination: each batch starts where the last one ended
                cur.execute("select id, features::text from quantops.signal_embeddings "
                            "where embedding is null and id > %s order by id limit %s", (last, batch))
                rows = cur.fetchall()
            if not rows:
                break
            last = rows[-1][0]
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            feats = [json.loads(r[1]) for r in rows]
            x = np.array([[f[n] for n in names] for f in feats], dtype=np.float64)
            z = (x - mean) / std
            v = z @ proj if proj is not None else z
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            rec = np.empty(len(rows), dtype=row_dtype)
            rec["nf"], rec["l1"], rec["id"], rec["l2"] = 2, 8, ids, 4 + 4 * dims
            rec["dim"], rec["unused"], rec["v"] = dims, 0, v.astype(np.float32)
            payload = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0" + rec.tobytes() + b"\xff\xff"
            with conn.cursor() as cur:
                with cur.copy("copy tmp_emb (id, embedding) from stdin (format binary)") as cp:
                    cp.write(payload)
                cur.execute("update quantops.signal_embeddings s set embedding = t.embedding, embedder = 'python', "
                            "embedder_version = '1', embedded_at = now() from tmp_emb t where s.id = t.id")
                cur.execute("truncate tmp_emb")
            total += len(rows)
        conn.commit()
    print(total, round(time.perf_counter() - t0, 3))


if __name__ == "__main__":
    main()
