"""Promotion latency with concurrent clients (see bench/promotion.sh)."""
import argparse, threading, time
import numpy as np
import psycopg

def setup(url, clients):
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("select quantops.set_promotion_policy(null, 'production', min_sharpe => 1.0, max_drawdown => 0.3, "
                  "min_trades => 50, max_backtest_age => interval '30 days')")
        for i in range(clients + 1):
            m = f"bench-model-{i}"
            c.execute("select quantops.create_model(%s)", (m,))
            for v in (1, 2):
                c.execute("select quantops.register_model_version(%s)", (m,))
                c.execute("insert into storage.objects (bucket_id, name) values ('model-artifacts', %s)",
                          (f"backtests/{m}/{v}/model.onnx",))
                c.execute("select quantops.record_backtest(%s, 'bench', '2025-01-01', '2025-12-31', sharpe => %s, "
                          "max_drawdown => 0.1, trades => 500, model => %s, model_version => %s)",
                          (f"{m}-bt{v}", 1.2 + 0.1 * v, m, v))
            c.execute("select quantops.promote(%s, 1, 'production', null)", (m,))
            # the floor's table: one alias-like row per client
        c.execute("create table if not exists public.bench_alias (id int primary key, version int not null)")
        c.execute("insert into public.bench_alias select g, 1 from generate_series(0, %s) g on conflict do nothing", (clients,))

def run(url, clients, seconds, mode):
    lat, conflicts, errors = [], [0], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    def client(i):
        mine, conf = [], 0
        m = "bench-model-%d" % (i if mode != "shared" else clients)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as c:
            cur = c.execute("select a.version from quantops.model_aliases a join quantops.models m on m.id = a.model_id "
                            "where m.name = %s and a.alias = 'production'", (m,)).fetchone()[0]
            while time.monotonic() < stop:
                nxt = 2 if cur == 1 else 1
                t0 = time.perf_counter()
                try:
                    if mode == "floor":
                        c.execute("update public.bench_alias set version = %s where id = %s and version = %s", (nxt, i, cur))
                    else:
                        c.execute("select quantops.promote(%s, %s, 'production', %s)", (m, nxt, cur))
                    mine.append(time.perf_counter() - t0)
                    cur = nxt
                except psycopg.errors.SerializationFailure:
                    mine.append(time.perf_counter() - t0)
                    conf += 1
                    cur = c.execute("select a.version from quantops.model_aliases a join quantops.models m on m.id = a.model_id "
                                    "where m.name = %s and a.alias = 'production'", (m,)).fetchone()[0]
                except Exception as e:  # noqa
                    errors.append(repr(e))
                    return
        with lock:
            lat.extend(mine)
            conflicts[0] += conf
    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    if errors:
        raise SystemExit("errors: %s" % errors[:3])
    a = np.array(lat) * 1000
    return {"calls": len(a), "per_s": len(a) / seconds, "p50": np.percentile(a, 50), "p95": np.percentile(a, 95),
            "p99": np.percentile(a, 99), "max": a.max(), "conflicts": conflicts[0]}

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, default=8)
    a = p.parse_args()
    setup(a.url, a.clients)
    print(f"promotion latency, {a.clients} concurrent clients, {a.seconds:g} s per mode (ms)")
    print(f"  {'mode':44s} {'calls':>7s} {'calls/s':>8s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'max':>7s} {'40001':>6s}")
    res = {}
    for mode, label in [("floor", "floor: bare UPDATE of an alias row"),
                        ("own", "quantops.promote, a model per client"),
                        ("shared", "quantops.promote, one model for all (CAS)")]:
        r = run(a.url, a.clients, a.seconds, mode)
        res[mode] = r
        print(f"  {label:44s} {r['calls']:7d} {r['per_s']:8.0f} {r['p50']:7.2f} {r['p95']:7.2f} {r['p99']:7.2f} {r['max']:7.2f} {r['conflicts']:6d}")
    with psycopg.connect(a.url, autocommit=True) as c:
        bad = c.execute("select count(*) from (select alias_id, valid, lag(upper(valid)) over (partition by alias_id order by lower(valid)) prev "
                        "from quantops.alias_history) h where prev is not null and prev <> lower(valid)").fetchone()[0]
        moves = c.execute("select count(*) from quantops.alias_history").fetchone()[0]
    own = res["own"]
    print("== summary")
    print(f"promotion p99 with {a.clients} clients: {own['p99']:.2f} ms (p50 {own['p50']:.2f} ms), goal < 10 ms: "
          f"{'met' if own['p99'] < 10 else 'MISSED'}; floor p99 {res['floor']['p99']:.2f} ms; "
          f"one shared model: p99 {res['shared']['p99']:.2f} ms with {res['shared']['conflicts']} conflicts (40001)")
    print(f"history: {moves} ranges, {bad} gaps or overlaps")

main()
