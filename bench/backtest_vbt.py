"""The backtest benchmark's Python side: seeded GBM bars, vectorbt (numba and rust engines) on the
same moving-average crossover grid, the equivalence check against quantops' results, and the
end-to-end Python flow (psycopg reads the bars, vectorbt runs, record_backtest writes the 10 best
pairs a symbol) against run_backtest_grid in SQL. Driven by bench/backtest.sh.

  gen     OUT.bin SYMBOLS BARS SEED     write bars (u32 symbols, u32 bars, per symbol o, h, l, c)
  engine  BARS.bin LO HI STEP OURS.csv  time vectorbt, compare with quantops' CSV; prints JSON
  e2e     DSN SYMBOLS BARS SEED LO HI STEP  load bars, time the Python flow and run_backtest_grid
"""
import json
import struct
import sys
import time
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
FEES, SLIPPAGE, INIT = 0.001, 0.0005, 100.0


def gbm(symbols, bars, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(symbols):
        z = rng.standard_normal(bars)
        close = 100 * np.exp(np.cumsum(0.2 / np.sqrt(252) * z + 0.05 / 252))
        open_ = np.concatenate([[close[0]], close[:-1]]) * (1 + 0.002 * rng.standard_normal(bars))
        out.append((open_, np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998, close))
    return out


def write_bars(path, data):
    with open(path, "wb") as f:
        f.write(struct.pack("<II", len(data), len(data[0][0])))
        for cols in data:
            for c in cols:
                f.write(np.asarray(c, dtype="<f8").tobytes())


def read_bars(path):
    with open(path, "rb") as f:
        m, n = struct.unpack("<II", f.read(8))
        return [tuple(np.frombuffer(f.read(8 * n), dtype="<f8") for _ in range(4)) for _ in range(m)]


def pairs_of(lo, hi, step):
    w = list(range(lo, hi + 1, step))
    return [(f, s) for i, f in enumerate(w) for s in w[i + 1:]]


def metrics(r):
    """Sharpe, Sortino, CAGR of each column of returns r (n x P), as quantops defines them."""
    n = r.shape[0]
    mean = r.mean(axis=0)
    std = r.std(axis=0, ddof=1)
    down = np.sqrt((np.minimum(r, 0) ** 2).mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > 0, mean / std * np.sqrt(252), np.nan)
        sortino = np.where(down > 0, mean / down * np.sqrt(252), np.nan)
    equity = np.prod(1 + r, axis=0)
    cagr = np.where(equity > 0, equity ** (252 / n) - 1, -1.0)
    return sharpe, sortino, cagr


def one_symbol(bars, pairs, engine):
    """vectorbt over one symbol's grid: every pair a column. Returns (results, seconds in from_signals)."""
    import vectorbt as vbt

    o, h, l, c = bars
    windows = sorted({w for p in pairs for w in p})
    ma = vbt.MA.run(c, window=windows).ma.values  # n x len(windows)
    col = {w: i for i, w in enumerate(windows)}
    fast = pd.DataFrame(ma[:, [col[f] for f, _ in pairs]])
    slow = pd.DataFrame(ma[:, [col[s] for _, s in pairs]])
    entries = fast.vbt.crossed_above(slow).values
    exits = fast.vbt.crossed_below(slow).values
    # decided at bar t, filled at the open of t + 1
    entries = np.vstack([np.zeros((1, len(pairs)), bool), entries[:-1]])
    exits = np.vstack([np.zeros((1, len(pairs)), bool), exits[:-1]])
    closes = np.broadcast_to(c[:, None], entries.shape)
    opens = np.broadcast_to(o[:, None], entries.shape)
    t0 = time.perf_counter()
    pf = vbt.Portfolio.from_signals(closes, entries, exits, price=-np.inf, open=opens, size=np.inf, fees=FEES,
                                    slippage=SLIPPAGE, init_cash=INIT, freq="1D", engine=engine)
    sim = time.perf_counter() - t0
    r = pf.returns().values
    sharpe, sortino, cagr = metrics(r)
    total = pf.total_return().values
    mdd = -pf.max_drawdown().values
    orders = pf.orders.count().values
    fees = pf.orders.fees.sum().values
    return dict(total=total, sharpe=sharpe, sortino=sortino, cagr=cagr, mdd=mdd, orders=orders, fees=fees), sim


def engine_mode(bars_path, lo, hi, step, ours_csv):
    data = read_bars(bars_path)
    pairs = pairs_of(lo, hi, step)
    ours = pd.read_csv(ours_csv)
    out = {"symbols": len(data), "bars": len(data[0][0]), "pairs": len(pairs), "engines": {}}
    for engine in ["numba", "rust"]:
        one_symbol(data[0], pairs[:5], engine)  # warm: compile and caches are not counted
        best, best_sim, results = None, None, None
        for _ in range(2):
            t0 = time.perf_counter()
            sim_total = 0.0
            res = []
            for b in data:
                r, sim = one_symbol(b, pairs, engine)
                res.append(r)
                sim_total += sim
            el = time.perf_counter() - t0
            if best is None or el < best:
                best, best_sim, results = el, sim_total, res
        n = len(data) * len(pairs)
        # the equivalence check: quantops' results against this engine's
        worst = {k: 0.0 for k in ["total_return", "sharpe", "sortino", "cagr", "max_drawdown", "fees"]}
        order_mismatch = 0
        for s, r in enumerate(results):
            q = ours[ours.symbol == s].set_index(["fast", "slow"])
            for j, (f, sl) in enumerate(pairs):
                row = q.loc[(f, sl)]
                order_mismatch += int(row.orders != r["orders"][j])
                for k, theirs in [("total_return", r["total"][j]), ("sharpe", r["sharpe"][j]), ("sortino", r["sortino"][j]),
                                  ("cagr", r["cagr"][j]), ("max_drawdown", r["mdd"][j]), ("fees", r["fees"][j])]:
                    mine = row[k]
                    if np.isnan(mine) and np.isnan(theirs):
                        continue
                    d = abs(mine - theirs) / max(abs(theirs), 1e-12) if abs(theirs) > 1e-12 else abs(mine - theirs)
                    worst[k] = max(worst[k], d)
        out["engines"][engine] = {"seconds": best, "from_signals_seconds": best_sim, "per_second": n / best,
                                  "order_count_mismatches": order_mismatch, "worst_relative_difference": worst}
    print(json.dumps(out))


def e2e_mode(dsn, symbols, bars, seed, lo, hi, step):
    import psycopg

    data = gbm(symbols, bars, seed)
    pairs = pairs_of(lo, hi, step)
    names = [f"E2E{k}" for k in range(symbols)]
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("delete from quantops.bars where symbol like 'E2E%'")
        with c.cursor().copy("copy quantops.bars (symbol, ts, open, high, low, close) from stdin") as cp:
            for name, (o, h, l, cl) in zip(names, data):
                for i in range(bars):
                    day = np.datetime64("2010-01-01") + np.timedelta64(i, "D")
                    cp.write_row((name, f"{day}T00:00:00Z", float(o[i]), float(h[i]), float(l[i]), float(cl[i])))
        c.execute("analyze quantops.bars")
        engine = "rust"
        one_symbol(data[0], pairs[:5], engine)  # warm
        grid = json.dumps({"fast": {"from": lo, "to": hi, "step": step}, "slow": {"from": lo, "to": hi, "step": step}})
        results = {}
        for rep in range(2):
            c.execute("delete from quantops.backtest_results where strategy like 'e2e-%' or strategy like 'ma_cross:E2E%'")
            # the Python flow: read the bars, run vectorbt, write the 10 best a symbol through record_backtest
            t0 = time.perf_counter()
            rows = c.execute("select symbol, array_agg(open order by ts), array_agg(high order by ts), array_agg(low order by ts), "
                             "array_agg(close order by ts), min(ts), max(ts) from quantops.bars where symbol = any(%s) group by symbol",
                             (names,)).fetchall()
            written = 0
            with c.transaction():
                for sym, o, h, l, cl, start, end in rows:
                    r, _ = one_symbol((np.array(o), np.array(h), np.array(l), np.array(cl)), pairs, engine)
                    order = np.argsort(-np.nan_to_num(r["sharpe"], nan=-np.inf), kind="stable")[:10]
                    for j in order:
                        f, s = pairs[j]
                        c.execute("select quantops.record_backtest(%s, %s, %s, %s, sharpe => %s, sortino => %s, max_drawdown => %s, "
                                  "cagr => %s, trades => %s, metrics => %s)",
                                  (f"e2e-{rep}-{sym}-{f}-{s}", f"e2e-{sym}", start, end,
                                   None if np.isnan(r["sharpe"][j]) else float(r["sharpe"][j]),
                                   None if np.isnan(r["sortino"][j]) else float(r["sortino"][j]),
                                   float(r["mdd"][j]), float(r["cagr"][j]), int(r["orders"][j]),
                                   json.dumps({"fast": f, "slow": s, "total_return": float(r["total"][j])})))
                        written += 1
            python = time.perf_counter() - t0
            # quantops: the same in one statement
            t0 = time.perf_counter()
            n = c.execute("select count(*) from quantops.run_backtest_grid('ma_cross', %s, %s::jsonb, "
                          "'{\"fees\": 0.001, \"slippage\": 0.0005}', top_n => 10)", (names, grid)).fetchone()[0]
            ours = time.perf_counter() - t0
            if rep == 0 or python < results["python_seconds"]:
                results["python_seconds"] = python
            if rep == 0 or ours < results["quantops_seconds"]:
                results["quantops_seconds"] = ours
            results["written"] = [written, n]
    results.update(symbols=symbols, bars=bars, pairs=len(pairs), ratio=results["python_seconds"] / results["quantops_seconds"])
    print(json.dumps(results))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "gen":
        write_bars(sys.argv[2], gbm(int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    elif mode == "engine":
        engine_mode(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif mode == "e2e":
        e2e_mode(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]))
