#!/usr/bin/env python3
"""The measurements of the vector-prune benchmark (bench/prune.sh runs it on a cluster of its own).

  1. data: ROWS signals of DIMS dimensions (a mixture of 100 Gaussian clusters in a 32-d latent
     space, projected to DIMS, plus isotropic noise, unit-normalised; fixed seed), as_of over 400
     days ending now with a gap around 200 days, so that max_age 200 days retires exactly half.
     Loaded once by binary COPY into the staging table bench.signals_src.
  2. F, the floor: on fresh data (reloaded from staging, IVFFlat index built by quantops.configure,
     vacuum analyze, checkpoint), the single statement
       WITH moved AS (DELETE ... RETURNING *) INSERT INTO archive SELECT ... FROM moved
  3. Q, quantops: same fresh state, quantops.set_retention(max_age 200 days), then
     CALL quantops.prune(batch_size => B) for each batch size. F runs first and again right
     before the last Q run; the ratio is the best Q against the mean of the F runs.
     During F and Q, INSERTERS processes (each its own connection, autocommit) insert one signal
     at a time at RATE rows/s each; every insert's latency is recorded. Lossless checks after each.
  4. recall: after the last Q run, half the live rows are replaced by rows from a shifted
     distribution; recall@10 at probes sqrt(lists) (ivfflat.iterative_scan off) against exact
     top-10 (numpy, over the table's own vectors) (a) before maintenance, (b) after quantops'
     automatic maintenance (the scheduler worker's 'maintain-index' job), (c) for a fresh build.

usage: prune_bench.py --dsn DSN --rows N [--dims 384] [--lists L] [--batches 1000,5000,2000] ...
Exits 0 when the benchmark ran (goals met or not), 1 on errors.
"""
import argparse
import json
import math
import multiprocessing as mp
import queue
import sys
import time
import traceback

import numpy as np
import psycopg

DAY_US = 86_400 * 1_000_000
PG_EPOCH = 946_684_800  # 2000-01-01 in unix seconds: timestamptz's binary origin
INDEX = "quantops.signal_embeddings_embedding_ivfflat_idx"
INDEX_NAME = "signal_embeddings_embedding_ivfflat_idx"
COLS = ("id, strategy, symbol, as_of, features, series, rationale, tags, owner, embedding, embedder, "
        "embedder_version, input_hash, embedded_at, created_at, updated_at")
POLICY = "bench-age"


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
class Model:
    """Old and shifted distributions: 100 clusters in a 32-d latent space, projected to dims."""
    LATENT, CLUSTERS, SPREAD, NOISE, SHIFT = 32, 100, 1.0, 0.5, 1.0

    def __init__(self, dims, seed):
        r = np.random.default_rng(seed)
        self.dims = dims
        self.w = r.standard_normal((self.LATENT, dims)) / math.sqrt(self.LATENT)
        self.old = r.standard_normal((self.CLUSTERS, self.LATENT))
        self.new = r.standard_normal((self.CLUSTERS, self.LATENT))
        u = r.standard_normal(self.LATENT)
        self.offset = self.SHIFT * math.sqrt(self.LATENT) * u / np.linalg.norm(u)

    def draw(self, rng, n, shifted=False, chunk=20000):
        out = np.empty((n, self.dims), dtype=np.float32)
        centres = self.new if shifted else self.old
        off = self.offset if shifted else 0.0
        for a in range(0, n, chunk):
            m = min(chunk, n - a)
            k = rng.integers(0, self.CLUSTERS, m)
            z = centres[k] + off + self.SPREAD * rng.standard_normal((m, self.LATENT))
            x = z @ self.w + self.NOISE * rng.standard_normal((m, self.dims)) / math.sqrt(self.dims)
            out[a:a + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def vec_literal(v):
    return "[" + ",".join("%.9g" % x for x in v) + "]"


def copy_binary(conn, table, cols, ids, strategies, symbols, as_of_us, vecs, embedder=b"bench", chunk=10000):
    """Binary COPY of (id?, strategy, symbol, as_of, embedding, embedder); fixed-width text fields."""
    n, dims = vecs.shape
    st_len, sy_len = strategies.dtype.itemsize, symbols.dtype.itemsize
    fields = [("nf", ">i2")]
    if ids is not None:
        fields += [("l_id", ">i4"), ("id", ">i8")]
    fields += [("l_st", ">i4"), ("st", "S%d" % st_len), ("l_sy", ">i4"), ("sy", "S%d" % sy_len),
               ("l_ts", ">i4"), ("ts", ">i8"), ("l_v", ">i4"), ("dim", ">i2"), ("unused", ">i2"),
               ("v", ">f4", (dims,)), ("l_e", ">i4"), ("e", "S%d" % len(embedder))]
    dt = np.dtype(fields)
    with conn.cursor() as cur:
        with cur.copy("copy %s (%s) from stdin (format binary)" % (table, cols)) as cp:
            cp.write(b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0")
            for a in range(0, n, chunk):
                b = min(n, a + chunk)
                rec = np.empty(b - a, dtype=dt)
                rec["nf"] = 6 if ids is not None else 5
                if ids is not None:
                    rec["l_id"], rec["id"] = 8, ids[a:b]
                rec["l_st"], rec["st"] = st_len, strategies[a:b]
                rec["l_sy"], rec["sy"] = sy_len, symbols[a:b]
                rec["l_ts"], rec["ts"] = 8, as_of_us[a:b]
                rec["l_v"], rec["dim"], rec["unused"], rec["v"] = 4 + 4 * dims, dims, 0, vecs[a:b]
                rec["l_e"], rec["e"] = len(embedder), embedder
                cp.write(rec.tobytes())
            cp.write(b"\xff\xff")


def now_us():
    return int((time.time() - PG_EPOCH) * 1_000_000)


# --------------------------------------------------------------------------------------------
# concurrent inserters (processes: no GIL between them and the driver)
# --------------------------------------------------------------------------------------------
def inserter(dsn, wid, rate, dims, seed, ready, stop, out):
    samples, errors, first_error = [], 0, None
    try:
        rng = np.random.default_rng(seed + 1000 + wid)
        pool = [vec_literal(v) for v in Model(dims, seed).draw(rng, 300)]
        sql = ("insert into quantops.signal_embeddings (strategy, symbol, as_of, embedding, embedder) "
               "values ('bench-ins', %s, pg_catalog.clock_timestamp(), %s::extensions.vector, 'bench')")
        sym = "W%02d" % wid
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql, (sym, pool[0]), prepare=True)
            ready.put(wid)
            period = 1.0 / rate
            t_first = time.monotonic()
            k = 0
            while not stop.is_set():
                sched = t_first + k * period
                delay = sched - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.monotonic()
                try:
                    conn.execute(sql, (sym, pool[k % len(pool)]), prepare=True)
                    ok = 1.0
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as e:
                    errors += 1
                    first_error = first_error or str(e).strip()
                    ok = 0.0
                t1 = time.monotonic()
                samples.append((sched, t0, t1, ok))
                k += 1
    except Exception as e:  # reported by the driver
        first_error = first_error or ("inserter %d: %s" % (wid, e))
        errors += 1
        ready.put(wid)
    out.put((wid, np.array(samples, dtype=np.float64).reshape(-1, 4), errors, first_error))


class Inserters:
    def __init__(self, dsn, n, rate, dims, seed):
        self.ctx = mp.get_context("spawn")
        self.dsn, self.n, self.rate, self.dims, self.seed = dsn, n, rate, dims, seed
        self.procs = []

    def start(self):
        self.ready, self.stop_ev, self.out = self.ctx.Queue(), self.ctx.Event(), self.ctx.Queue()
        self.procs = [self.ctx.Process(target=inserter, daemon=True,
                                       args=(self.dsn, w, self.rate, self.dims, self.seed, self.ready, self.stop_ev, self.out))
                      for w in range(self.n)]
        for p in self.procs:
            p.start()
        for _ in range(self.n):
            self.ready.get(timeout=60)
        self.t_start = time.monotonic()

    def stop(self):
        """Stops them; returns (samples [sched, start, end, ok], errors, first_error)."""
        if not self.procs:
            return np.zeros((0, 4)), 0, None
        self.stop_ev.set()
        parts, errors, first = [], 0, None
        for _ in self.procs:
            try:
                wid, s, e, f = self.out.get(timeout=60)
            except queue.Empty:
                errors += 1
                first = first or "an inserter did not report"
                continue
            parts.append(s)
            errors += e
            first = first or f
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self.procs = []
        return (np.vstack(parts) if parts else np.zeros((0, 4))), errors, first


def lat_stats(samples, a, b):
    """Latency of the inserts that started in [a, b): service time and time from schedule (ms)."""
    s = samples[(samples[:, 1] >= a) & (samples[:, 1] < b)]
    if len(s) == 0:
        return None
    svc = (s[:, 2] - s[:, 1]) * 1000
    sch = (s[:, 2] - s[:, 0]) * 1000
    return {"n": len(s), "rate": len(s) / max(b - a, 1e-9), "p50": np.percentile(svc, 50),
            "p95": np.percentile(svc, 95), "p99": np.percentile(svc, 99), "max": svc.max(),
            "p99_sched": np.percentile(sch, 99), "failed": int((s[:, 3] == 0).sum())}


def fmt_lat(name, st):
    if st is None:
        return "  %-24s no inserts in this window" % name
    return ("  %-24s %6d inserts %6.1f/s  p50 %6.2f  p95 %6.2f  p99 %7.2f  max %7.2f ms   (p99 from schedule %7.2f ms)%s"
            % (name, st["n"], st["rate"], st["p50"], st["p95"], st["p99"], st["max"], st["p99_sched"],
               ("  FAILED %d" % st["failed"]) if st["failed"] else ""))


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, a):
        self.a = a
        self.conn = psycopg.connect(a.dsn, autocommit=True)
        self.conn.execute("set client_min_messages = warning")
        self.model = Model(a.dims, a.seed)
        self.ins = Inserters(a.dsn, a.inserters, a.rate, a.dims, a.seed)

    # never server-side prepared statements: a cached plan outlives the session settings it was
    # made under (enable_indexscan = off for the exact search would stick to the ANN queries)
    def one(self, sql, params=None):
        r = self.conn.execute(sql, params, prepare=False).fetchone()
        return r[0] if r else None

    def x(self, sql, params=None):
        return self.conn.execute(sql, params, prepare=False)

    # -- setup ----------------------------------------------------------------------------------
    def setup(self):
        a = self.a
        for fn in ("prune_batch", "index_health", "maintain_index", "set_retention", "prune"):
            if not self.one("select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                            "where n.nspname = 'quantops' and p.proname = %s", (fn,)):
                raise RuntimeError("quantops.%s does not exist: the installed quantops is older than the prune feature" % fn)
        # the benchmark decides when the scheduler prunes or maintains the index
        self.x("update quantops.jobs set enabled = false where name in ('prune', 'maintain-index')")
        self.x("create schema if not exists bench")
        self.x("drop table if exists bench.signals_src")
        self.x("create table bench.signals_src (id bigint primary key, strategy text not null, symbol text not null, "
               "as_of timestamptz not null, embedding extensions.vector(%d) not null, embedder text not null)" % a.dims)
        n = a.rows
        t0 = time.perf_counter()
        rng = np.random.default_rng(a.seed)
        vecs = self.model.draw(rng, n)
        ids = np.arange(1, n + 1, dtype=np.int64)
        strategies = np.array([b"bench-s%d" % (i + 1) for i in range(5)])[rng.integers(0, 5, n)]
        symbols = np.array([b"SYM%03d" % i for i in range(200)])[rng.integers(0, 200, n)]
        # as_of: the older half in [now - 400 d, now - 210 d), the newer in [now - 190 d, now - 1 h):
        # max_age 200 days retires exactly the older half, whenever within the next 10 days it runs
        t_now = now_us()
        old_n = n // 2
        new_n = n - old_n
        old = t_now - 400 * DAY_US + (np.arange(old_n, dtype=np.int64) * (190 * DAY_US // max(old_n, 1)))
        new = t_now - 190 * DAY_US + (np.arange(new_n, dtype=np.int64) * ((190 * DAY_US - 3600 * 10**6) // max(new_n, 1)))
        as_of = np.concatenate([old, new])
        t1 = time.perf_counter()
        copy_binary(self.conn, "bench.signals_src", "id, strategy, symbol, as_of, embedding, embedder",
                    ids, strategies, symbols, as_of, vecs)
        self.x("vacuum analyze bench.signals_src")
        t2 = time.perf_counter()
        self.expected_moved = old_n
        log("data: %d rows of %d dims generated in %.1f s, COPY into bench.signals_src %.1f s (%.0f rows/s)"
            % (n, a.dims, t1 - t0, t2 - t1, n / (t2 - t1)))
        # type the columns while the tables are empty (no rewrite of loaded rows later)
        self.x("truncate quantops.signal_embeddings, quantops.signal_embeddings_archive restart identity cascade")
        self.one("select quantops.configure(dims => %d, lists => %d, metric => 'cosine')" % (a.dims, a.lists))
        del vecs

    def reload(self):
        """A fresh, identical state: the staging rows, the IVFFlat index built on them, vacuumed, checkpointed."""
        a = self.a
        t0 = time.perf_counter()
        self.x("drop index if exists %s" % INDEX)
        self.x("truncate quantops.signal_embeddings, quantops.signal_embeddings_archive cascade")
        self.x("select quantops.drop_retention(name) from quantops.retention_policies")
        self.x("insert into quantops.signal_embeddings (id, strategy, symbol, as_of, embedding, embedder) "
               "overriding system value select id, strategy, symbol, as_of, embedding, embedder "
               "from bench.signals_src order by id")
        self.x("select pg_catalog.setval(pg_catalog.pg_get_serial_sequence('quantops.signal_embeddings', 'id'), "
               "(select max(id) from bench.signals_src))")
        self.x("vacuum analyze quantops.signal_embeddings")
        self.x("vacuum analyze quantops.signal_embeddings_archive")
        t1 = time.perf_counter()
        self.one("select quantops.configure(dims => %d, lists => %d, metric => 'cosine')" % (a.dims, a.lists))
        t2 = time.perf_counter()
        self.x("checkpoint")
        log("  fresh state: %d rows reloaded in %.1f s, IVFFlat index (lists %d) built by quantops.configure in %.1f s"
            % (a.rows, t1 - t0, a.lists, t2 - t1))

    def autovacuums(self):
        r = self.x("select coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0) from pg_stat_user_tables "
                   "where schemaname = 'quantops' and relname in ('signal_embeddings', 'signal_embeddings_archive')").fetchone()
        return int(r[0]), int(r[1])

    def check_lossless(self, label, reason):
        """live staged rows + archived = staged; no id in both; every archived row equals its staged row."""
        live = self.one("select count(*) from quantops.signal_embeddings where strategy like 'bench-s%'")
        arch = self.one("select count(*) from quantops.signal_embeddings_archive")
        both = self.one("select count(*) from quantops.signal_embeddings s join quantops.signal_embeddings_archive a using (id)")
        same = self.one("select count(*) from quantops.signal_embeddings_archive a join bench.signals_src s using (id) "
                        "where a.embedding = s.embedding and a.as_of = s.as_of and a.strategy = s.strategy "
                        "and a.symbol = s.symbol and a.archive_reason = %s", (reason,))
        young = self.one("select count(*) from quantops.signal_embeddings_archive where as_of >= now() - interval '200 days'")
        ok = live + arch == self.a.rows and both == 0 and same == arch and arch == self.expected_moved and young == 0
        log("  lossless (%s): live %d + archived %d = %d (staged %d); ids in both tables %d; archived rows equal "
            "to their source %d/%d; archived rows younger than the cutoff %d -> %s"
            % (label, live, arch, live + arch, self.a.rows, both, same, arch, young, "OK" if ok else "FAILED"))
        return ok

    def timed_run(self, label, run):
        """Inserters on, an idle window, run() timed, inserters off. Returns (seconds, result, latency)."""
        av0 = self.autovacuums()
        self.ins.start()
        time.sleep(self.a.idle)
        t0 = time.monotonic()
        try:
            result = run()
        finally:
            t1 = time.monotonic()
            time.sleep(0.5)
            samples, errors, first = self.ins.stop()
        av1 = self.autovacuums()
        idle = lat_stats(samples, self.ins.t_start + 0.5, t0)
        during = lat_stats(samples, t0, t1)
        log(fmt_lat("inserters, idle", idle))
        log(fmt_lat("inserters, during " + label, during))
        if errors:
            log("  inserter errors: %d (first: %s)" % (errors, first))
        if av1 != av0:
            log("  autovacuum/autoanalyze on the two tables during the run: +%d vacuum, +%d analyze"
                % (av1[0] - av0[0], av1[1] - av0[1]))
        return t1 - t0, result, {"idle": idle, "during": during, "errors": errors, "first_error": first}

    # -- F and Q --------------------------------------------------------------------------------
    def run_floor(self):
        log("\nF  the floor: one statement, WITH moved AS (DELETE ... RETURNING *) INSERT INTO archive SELECT ...")
        self.reload()
        sql = ("with moved as (delete from quantops.signal_embeddings where as_of < now() - interval '200 days' returning *) "
               "insert into quantops.signal_embeddings_archive (%s, archive_reason) select %s, 'floor' from moved" % (COLS, COLS))

        def run():
            return self.x(sql).rowcount

        sec, moved, lat = self.timed_run("the floor", run)
        log("  moved %d rows in %.2f s: %.0f rows/s" % (moved, sec, moved / sec))
        ok = self.check_lossless("floor", "floor")
        return {"moved": moved, "sec": sec, "rps": moved / sec, "lat": lat, "ok": ok}

    def run_quantops(self, batch):
        log("\nQ  quantops: set_retention(max_age 200 days), CALL quantops.prune(batch_size => %d)" % batch)
        self.reload()
        self.one("select quantops.set_retention(name => %s, kind => 'max_age', max_age => interval '200 days')", (POLICY,))
        plan = self.one("call quantops.prune(dry_run => true)")
        log("  dry run: %s rows to move" % plan.get("rows_to_move"))

        def run():
            return self.one("call quantops.prune(batch_size => %d)" % batch)

        sec, rep, lat = self.timed_run("quantops.prune", run)
        moved = int(rep["moved"])
        log("  moved %d rows in %d batches in %.2f s: %.0f rows/s (the report's duration_ms %s)"
            % (moved, rep["batches"], sec, moved / sec, rep.get("duration_ms")))
        hb, ha = rep.get("health_before") or {}, rep.get("health_after") or {}
        log("  report health (no sampling): before rows %s lists %s churn %s; after rows %s lists %s churn %s"
            % (hb.get("rows"), hb.get("lists"), hb.get("churn"), ha.get("rows"), ha.get("lists"), ha.get("churn")))
        ok = self.check_lossless("quantops", "retention policy " + POLICY) and moved == int(plan.get("rows_to_move", -1))
        return {"batch": batch, "moved": moved, "batches": rep["batches"], "sec": sec, "rps": moved / sec,
                "lat": lat, "ok": ok, "report": rep}

    # -- recall ---------------------------------------------------------------------------------
    def index_lists(self):
        r = self.one("select coalesce((select split_part(o, '=', 2)::int from unnest(c.reloptions) o where o like 'lists=%%'), 100) "
                     "from pg_class c where c.oid = to_regclass(%s)", (INDEX,))
        if r is None:
            raise RuntimeError("the index %s does not exist" % INDEX)
        return int(r)

    def live_vectors(self):
        dims = self.a.dims
        ids, bufs = [], []
        with self.conn.cursor(binary=True) as cur:
            cur.execute("select id, embedding from quantops.signal_embeddings where embedding is not null")
            for i, b in cur:
                ids.append(i)
                bufs.append(bytes(b))
        rec = np.frombuffer(b"".join(bufs), dtype=np.dtype([("dim", ">i2"), ("u", ">i2"), ("v", ">f4", (dims,))]))
        x = rec["v"].astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return np.array(ids, dtype=np.int64), x

    def truth(self, qv, k=10):
        ids, x = self.live_vectors()
        q = qv.astype(np.float64)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        out = []
        for a in range(0, len(q), 50):
            s = q[a:a + 50] @ x.T
            top = np.argpartition(-s, k, axis=1)[:, :k]
            out += [set(ids[t].tolist()) for t in top]
        return out, len(ids)

    def ann(self, qlits, probes, exact=False, k=10):
        """top-k ids per query: through the IVFFlat index at `probes`, or exact (no index)."""
        sql = ("select id from quantops.signal_embeddings order by embedding operator(extensions.<=>) %%s::extensions.vector limit %d%s"
               % (k, " /* exact */" if exact else ""))
        res, times = [], []
        with self.conn.transaction():
            if exact:
                self.x("set local enable_indexscan = off")
                self.x("set local enable_bitmapscan = off")
            else:
                self.x("set local jit = off")  # JIT compiles per query: noise in the latency, no effect on results
                self.x("set local ivfflat.probes = %d" % probes)
                self.x("set local ivfflat.iterative_scan = off")
                self.x("set local enable_seqscan = off")
                plan = "\n".join(r[0] for r in self.x("explain " + sql.replace("%s", "'%s'") % qlits[0]))
                if INDEX_NAME not in plan:
                    raise RuntimeError("the ANN query does not use the IVFFlat index:\n" + plan)
            for ql in qlits:
                t0 = time.perf_counter()
                res.append({r[0] for r in self.x(sql, (ql,))})
                times.append(time.perf_counter() - t0)
            scanned = None
            if not exact:
                # the rows in the probed lists: without the iterative scan, an unlimited scan returns them all
                cnt = ("select count(*) from (select 1 from quantops.signal_embeddings order by embedding "
                       "operator(extensions.<=>) %s::extensions.vector limit 1000000000) s")
                scanned = float(np.mean([self.one(cnt, (ql,)) for ql in qlits[:50]]))
        return res, 1000 * float(np.mean(times)), scanned

    def recall(self, label, qlits, truth, groups):
        lists = self.index_lists()
        probes = max(1, int(round(math.sqrt(lists))))
        found, ms, scanned = self.ann(qlits, probes)
        per = np.array([len(f & t) / max(len(t), 1) for f, t in zip(found, truth)])
        parts = "  ".join("%s %.4f" % (g, per[m].mean()) for g, m in groups)
        log("  recall@10 %-22s lists %4d probes %3d: %.4f (+-%.4f)   %s   %.1f ms/query, %.0f rows scanned/query"
            % (label, lists, probes, per.mean(), 1.96 * per.std(ddof=1) / math.sqrt(len(per)), parts, ms, scanned))
        return {"lists": lists, "probes": probes, "recall": float(per.mean()), "per": per, "ms": ms, "scanned": scanned}

    def health(self, label):
        h = self.one("select quantops.index_health(recall => true, k => 10, queries => 50)")
        r = h.get("recall") or {}
        log("  index_health %-8s rows %s lists %s balance %s drift %s churn %s needs_rebuild %s; recall@10 %s at probes %s "
            "(ci95 %s), probes for target %s: %s"
            % (label, h.get("rows"), h.get("lists"), h.get("balance"), h.get("drift"), h.get("churn"), h.get("needs_rebuild"),
               r.get("recall"), r.get("probes"), r.get("ci95"), r.get("target"), r.get("probes_for_target")))
        if h.get("reasons"):
            log("    reasons: %s" % "; ".join(h["reasons"]))
        if h.get("warning"):
            log("    warning: %s" % h["warning"])
        return h

    def maintain(self):
        """quantops' automatic maintenance: the scheduler worker's 'maintain-index' job, made due now."""
        a = self.a
        # index_policy stays at its defaults: min_interval counts quantops' own rebuilds only,
        # not the configure() that built the index minutes ago
        alive = self.one("select coalesce(bool_or(state = 'running' and heartbeat_at > now() - interval '30 seconds'), false) "
                         "from quantops.workers")
        run0 = self.one("select coalesce(max(id), 0) from quantops.job_runs where job = 'maintain-index'")
        build0 = self.one("select coalesce(max(id), 0) from quantops.index_builds")
        t0 = time.monotonic()
        how, details = None, None
        if alive:
            self.x("update quantops.jobs set enabled = true, next_run_at = now() where name = 'maintain-index'")
            run_id = None
            while time.monotonic() - t0 < a.maint_timeout:
                r = self.x("select id, status, error, details from quantops.job_runs where job = 'maintain-index' and id > %s "
                           "order by id limit 1", (run0,)).fetchone()
                if r and r[1] != "running":
                    run_id, status, err, details = r
                    break
                if r is None and time.monotonic() - t0 > 60:
                    break
                time.sleep(0.5)
            self.x("update quantops.jobs set enabled = false where name = 'maintain-index'")
            if run_id is not None:
                how = "the scheduler worker's 'maintain-index' job (job_runs id %d, %s%s)" % (
                    run_id, status, (": " + err) if err else "")
            elif r is not None:
                raise RuntimeError("the 'maintain-index' job run %s did not finish within %d s" % (r[0], a.maint_timeout))
        if how is None:
            log("  the scheduler worker did not run 'maintain-index' (worker alive: %s); fallback: quantops.maintain_index()" % alive)
            details = self.one("select quantops.maintain_index()")
            how = "quantops.maintain_index(), the rebuild run by the scheduler worker"
        # every rebuild requested since: to succeeded/failed
        while True:
            pending = self.one("select count(*) from quantops.index_builds where id > %s and status in ('queued', 'running')", (build0,))
            if not pending:
                break
            if time.monotonic() - t0 > a.maint_timeout:
                raise RuntimeError("a rebuild did not finish within %d s" % a.maint_timeout)
            time.sleep(0.5)
        sec = time.monotonic() - t0
        log("  maintenance by %s, %.1f s" % (how, sec))
        if details:
            log("    decision: rebuild %s, method %s, lists %s; reasons: %s"
                % (details.get("rebuild"), details.get("method"), details.get("lists"), "; ".join(map(str, details.get("reasons") or [])) or "-"))
        builds = self.x("select id, status, method, lists, requested_by, error, "
                        "round(extract(epoch from finished_at - started_at)::numeric, 1) "
                        "from quantops.index_builds where id > %s order by id", (build0,)).fetchall()
        for b in builds:
            log("    index_builds %s: status %s, method %s, lists %s, requested by %s, %s s%s"
                % (b[0], b[1], b[2], b[3], b[4], b[6], (", error: " + b[5]) if b[5] else ""))
        if not builds:
            log("    no rebuild was requested")
        return {"how": how, "details": details, "builds": builds, "sec": sec}

    def run_recall(self):
        a = self.a
        log("\nR  recall@10 after replacing half the live rows with a shifted distribution")
        live_staged = self.one("select count(*) from quantops.signal_embeddings where strategy like 'bench-s%'")
        repl = live_staged // 2
        t0 = time.perf_counter()
        n_del = self.x("delete from quantops.signal_embeddings where id in (select id from quantops.signal_embeddings "
                       "where strategy like 'bench-s%%' order by id %% 2, id limit %s)", (repl,)).rowcount
        rng = np.random.default_rng(a.seed + 7)
        vecs = self.model.draw(rng, n_del, shifted=True)
        base = now_us() - 100 * DAY_US
        as_of = base + np.arange(n_del, dtype=np.int64) * (90 * DAY_US // max(n_del, 1))
        copy_binary(self.conn, "quantops.signal_embeddings", "strategy, symbol, as_of, embedding, embedder", None,
                    np.array([b"bench-new"] * n_del), np.array([b"SYM%03d" % i for i in range(200)])[rng.integers(0, 200, n_del)],
                    as_of, vecs)
        self.x("vacuum analyze quantops.signal_embeddings")
        live = self.one("select count(*) from quantops.signal_embeddings")
        log("  replaced %d of %d live rows (deleted, then %d shifted rows inserted through the index) in %.1f s; "
            "vacuum analyze; %d live rows" % (n_del, live, n_del, time.perf_counter() - t0, live))
        # queries: fresh draws from the current mixture (half shifted, half original), not rows of the table
        qr = np.random.default_rng(a.seed + 99)
        nq_new = a.queries // 2
        qv = np.vstack([self.model.draw(qr, nq_new, shifted=True), self.model.draw(qr, a.queries - nq_new)])
        qlits = [vec_literal(v) for v in qv]
        groups = [("shifted queries", np.arange(a.queries) < nq_new), ("original queries", np.arange(a.queries) >= nq_new)]
        truth, n = self.truth(qv)
        check = min(20, a.queries)
        exact, _, _ = self.ann(qlits[:check], 0, exact=True)
        agree = np.mean([len(e & t) / 10 for e, t in zip(exact, truth[:check])])
        log("  truth: exact top-10 in numpy over the %d live vectors; agrees with PostgreSQL's exact search (no index) "
            "on %d queries: %.4f" % (n, check, agree))

        log("\n  (a) before maintenance")
        h0 = self.health("before")
        ra = self.recall("before maintenance", qlits, truth, groups)
        log("\n  (b) quantops' automatic maintenance")
        m = self.maintain()
        h1 = self.health("after")
        rb = self.recall("after maintenance", qlits, truth, groups)
        log("\n  (c) a fresh build: DROP INDEX; CREATE INDEX ... USING ivfflat ... WITH (lists = %d)" % rb["lists"])
        rcs = []
        for i in range(a.fresh_builds):
            t0 = time.perf_counter()
            self.x("drop index %s" % INDEX)
            self.x("create index %s on quantops.signal_embeddings using ivfflat (embedding extensions.vector_cosine_ops) "
                   "with (lists = %d)" % (INDEX_NAME, rb["lists"]))
            log("  built in %.1f s" % (time.perf_counter() - t0))
            rcs.append(self.recall("fresh build" + (" #%d" % (i + 1) if a.fresh_builds > 1 else ""), qlits, truth, groups))
        rc = rcs[0] if len(rcs) == 1 else {**rcs[0], "recall": float(np.mean([r["recall"] for r in rcs])),
                                          "per": np.mean([r["per"] for r in rcs], axis=0)}
        d = rb["per"] - rc["per"]
        log("  after maintenance - fresh build: %+.4f (paired, +-%.4f at 95%%)" % (d.mean(), 1.96 * d.std(ddof=1) / math.sqrt(len(d))))
        return {"a": ra, "b": rb, "c": rc, "maint": m, "h0": h0, "h1": h1, "agree": agree}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--rows", type=int, default=200000)
    p.add_argument("--dims", type=int, default=384)
    p.add_argument("--lists", type=int, default=None, help="default: rows / 1000, at least 10")
    p.add_argument("--batches", default="1000,5000,2000", help="quantops.prune batch sizes; the last one feeds the recall part")
    p.add_argument("--inserters", type=int, default=4)
    p.add_argument("--rate", type=float, default=50, help="inserts per second per inserter")
    p.add_argument("--idle", type=float, default=3, help="seconds of inserts before each prune (the idle latency)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--fresh-builds", type=int, default=1)
    p.add_argument("--floor-runs", type=int, default=2, choices=(1, 2))
    p.add_argument("--maint-timeout", type=int, default=900)
    p.add_argument("--seed", type=int, default=20261125)
    a = p.parse_args()
    a.lists = a.lists or max(10, a.rows // 1000)
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    started = time.perf_counter()
    b = Bench(a)
    log("vector prune benchmark: %d rows, %d dims, IVFFlat lists %d (cosine), archive the older half (max_age 200 days); "
        "%d inserters at %g rows/s each during each prune; batch sizes %s"
        % (a.rows, a.dims, a.lists, a.inserters, a.rate, ", ".join(map(str, batches))))
    pg = b.one("select version()").split(" on ")[0]
    log("%s, pgvector %s, quantops %s, %s cores" % (pg, b.one("select extversion from pg_extension where extname = 'vector'"),
                                                   b.one("select extversion from pg_extension where extname = 'quantops'"), mp.cpu_count()))
    b.setup()
    # F first; with two floor runs the second comes right before the last quantops run, so that
    # drift over the run (caches, WAL, autovacuum) does not favour one side
    fs, qs = [b.run_floor()], []
    for i, bs in enumerate(batches):
        if i == len(batches) - 1 and a.floor_runs > 1:
            fs.append(b.run_floor())
        qs.append(b.run_quantops(bs))
    r = b.run_recall()

    nan = float("nan")
    p99 = lambda run: run["lat"]["during"]["p99"] if run["lat"]["during"] else nan
    f_rps = float(np.mean([f["rps"] for f in fs]))
    best = max(qs, key=lambda q: q["rps"])
    ok_all = all(f["ok"] for f in fs) and all(q["ok"] for q in qs)
    log("\n== prune throughput (each run on identical fresh data, the IVFFlat index in place; ratio to the floor's mean)")
    log("  %-36s %8s %9s %10s %7s %13s" % ("", "rows", "seconds", "rows/s", "ratio", "ins. p99 ms"))
    for i, f in enumerate(fs):
        log("  %-36s %8d %9.2f %10.0f %7.2f %13.2f" % ("F floor: one DELETE ... INSERT (#%d)" % (i + 1), f["moved"], f["sec"],
                                                       f["rps"], f["rps"] / f_rps, p99(f)))
    for q in qs:
        log("  %-36s %8d %9.2f %10.0f %7.2f %13.2f" % ("Q quantops.prune(batch_size %d)" % q["batch"], q["moved"], q["sec"],
                                                       q["rps"], q["rps"] / f_rps, p99(q)))
    log("\n== summary")
    fl = max(p99(f) for f in fs)
    ql = p99(best)
    qmax = max(p99(q) for q in qs)
    log("prune: quantops %.0f rows/s (batch_size %d; all: %s), floor %.0f rows/s (%s), ratio %.2f (goal >= 0.80): %s"
        % (best["rps"], best["batch"], ", ".join("%d: %.0f" % (q["batch"], q["rps"]) for q in qs), f_rps,
           "mean of " + ", ".join("%.0f" % f["rps"] for f in fs) if len(fs) > 1 else "one run",
           best["rps"] / f_rps, "met" if best["rps"] / f_rps >= 0.8 else "MISSED"))
    log("inserters p99 (%d x %g/s): during floor %.1f ms (worst F run), during quantops %.1f ms (batch_size %d; worst over batch sizes %.1f ms) "
        "(goal < 100 ms): %s" % (a.inserters, a.rate, fl, ql, best["batch"], qmax, "met" if qmax < 100 else "MISSED"))
    ra, rb, rc = r["a"], r["b"], r["c"]
    log("recall@10 at probes sqrt(lists): before %.4f (lists %d, probes %d), after maintenance %.4f (lists %d, probes %d), "
        "fresh build %.4f (lists %d, probes %d); |after - fresh| = %.4f (goal <= 0.01): %s"
        % (ra["recall"], ra["lists"], ra["probes"], rb["recall"], rb["lists"], rb["probes"], rc["recall"], rc["lists"], rc["probes"],
           abs(rb["recall"] - rc["recall"]), "met" if abs(rb["recall"] - rc["recall"]) <= 0.01 else "MISSED"))
    log("recall@10 cost: %.0f, %.0f, %.0f rows scanned per query (%.1f, %.1f, %.1f ms)"
        % (ra["scanned"], rb["scanned"], rc["scanned"], ra["ms"], rb["ms"], rc["ms"]))
    md = r["maint"]["details"] or {}
    log("maintenance: %s; rebuilt: %s; drift %s -> %s, balance %s -> %s"
        % (r["maint"]["how"], ", ".join("%s %s lists %s" % (bd[2], bd[1], bd[3]) for bd in r["maint"]["builds"])
           or "no (%s)" % ("; ".join(map(str, md.get("reasons") or [])) or "no reason"),
           r["h0"].get("drift"), r["h1"].get("drift"), r["h0"].get("balance"), r["h1"].get("balance")))
    log("lossless: %s; total %.0f s" % ("every run OK" if ok_all else "FAILED (see above)", time.perf_counter() - started))
    if not ok_all:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
