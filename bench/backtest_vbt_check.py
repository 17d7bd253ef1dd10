"""Equivalence check, quantops' backtest engine against vectorbt (PyPI), on seeded GBM bars.

The first piece of the issue-15 benchmark: the same moving-average crossovers, fees 0.1 %,
slippage 0.05 %, fills at the next open (vectorbt: signals shifted one bar, price=-inf with
open=, size=inf), 252-day annualisation; compares each pair's total return, order count, fees,
Sharpe, Sortino and CAGR. Usage: python bench/backtest_vbt_check.py DSN [symbols] [bars]
"""
import sys

import numpy as np
import pandas as pd
import psycopg
import vectorbt as vbt

dsn = sys.argv[1]
n_sym = int(sys.argv[2]) if len(sys.argv) > 2 else 2
n_bars = int(sys.argv[3]) if len(sys.argv) > 3 else 2520
rng = np.random.default_rng(20261128)
windows = list(range(5, 101, 5))
pairs = [(f, s) for i, f in enumerate(windows) for s in windows[i + 1:]]

symbols, bars = [], {}
for k in range(n_sym):
    z = rng.standard_normal(n_bars)
    close = 100 * np.exp(np.cumsum(0.2 / np.sqrt(252) * z + 0.05 / 252))
    open_ = np.concatenate([[close[0]], close[:-1]]) * (1 + 0.002 * rng.standard_normal(n_bars))
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    sym = f"VBT{k}"
    symbols.append(sym)
    bars[sym] = (open_, high, low, close)

with psycopg.connect(dsn, autocommit=True) as c:
    c.execute("delete from quantops.bars where symbol like 'VBT%'")
    with c.cursor().copy("copy quantops.bars (symbol, ts, open, high, low, close) from stdin") as cp:
        for sym in symbols:
            o, h, l, cl = bars[sym]
            for i in range(n_bars):
                cp.write_row((sym, f"{np.datetime64('2010-01-01') + np.timedelta64(i, 'D')}T00:00:00Z",
                              float(o[i]), float(h[i]), float(l[i]), float(cl[i])))
    rows = c.execute(
        "select symbol, params, total_return, sharpe, sortino, cagr, fees_paid from quantops.run_backtest_grid("
        "'ma_cross', %s, '{\"fast\": {\"from\": 5, \"to\": 100, \"step\": 5}, \"slow\": {\"from\": 5, \"to\": 100, \"step\": 5}}',"
        "'{\"fees\": 0.001, \"slippage\": 0.0005}', keep => 'none', top_n => 1000)",
        (symbols,),
    ).fetchall()
ours = {(r[0], r[1]["fast"], r[1]["slow"]): r[2:] for r in rows}

worst = {"total_return": 0.0, "sharpe": 0.0, "sortino": 0.0, "cagr": 0.0, "fees": 0.0}
checked = 0
for sym in symbols:
    o, h, l, cl = bars[sym]
    for f, s in pairs:
        fast = vbt.MA.run(cl, f).ma.values
        slow = vbt.MA.run(cl, s).ma.values
        fs, ss = pd.Series(fast), pd.Series(slow)
        entries = fs.vbt.crossed_above(ss).values
        exits = fs.vbt.crossed_below(ss).values
        # decided at bar t, filled at the open of t + 1
        ent = np.concatenate([[False], entries[:-1]])
        ex = np.concatenate([[False], exits[:-1]])
        pf = vbt.Portfolio.from_signals(pd.Series(cl), ent, ex, price=-np.inf, open=pd.Series(o), size=np.inf,
                                        fees=0.001, slippage=0.0005, init_cash=100.0, freq="1D")
        r = pf.returns().values
        tr = pf.total_return()
        m = ours[(sym, f, s)]
        def rel(a, b):
            if a is None or b is None or not np.isfinite(b):
                return 0.0 if (a is None) == (b is None or not np.isfinite(b)) else float("inf")
            return abs(a - b) / max(abs(b), 1e-12)
        std = r.std(ddof=1)
        sharpe = r.mean() / std * np.sqrt(252) if std > 0 else None
        down = np.sqrt(np.mean(np.minimum(r, 0) ** 2))
        sortino = r.mean() / down * np.sqrt(252) if down > 0 else None
        cagr = (1 + tr) ** (252 / len(r)) - 1
        for k, a, b in [("total_return", m[0], tr), ("sharpe", m[1], sharpe), ("sortino", m[2], sortino),
                        ("cagr", m[3], cagr), ("fees", m[4], pf.orders.fees.sum())]:
            worst[k] = max(worst[k], rel(a, b))
        checked += 1
print(f"checked {checked} backtests ({n_sym} symbols x {len(pairs)} pairs, {n_bars} bars)")
for k, v in worst.items():
    print(f"  worst relative difference in {k}: {v:.3g}")
ok = all(v <= 1e-9 for v in worst.values())
print("EQUIVALENT within 1e-9" if ok else "NOT EQUIVALENT")
sys.exit(0 if ok else 1)
