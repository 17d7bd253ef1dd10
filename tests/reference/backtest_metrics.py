"""Independent reference for quantops.backtest_metrics (src/backtest/core.rs): the same
definitions computed with numpy, written separately. Writes the values the Rust tests pin:
    .cache/bench-venv/bin/python tests/reference/backtest_metrics.py
"""
import os
import numpy as np

def metrics(r, ppy, rf):
    r = np.asarray(r, dtype=np.float64)
    e = r - rf / ppy
    sharpe = e.mean() / e.std(ddof=1) * np.sqrt(ppy)
    downside = np.sqrt(np.mean(np.minimum(e, 0.0) ** 2))
    sortino = e.mean() / downside * np.sqrt(ppy)
    equity = np.cumprod(1.0 + r)
    peaks = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    mdd = float(np.max(1.0 - equity / peaks))
    cagr = equity[-1] ** (ppy / len(r)) - 1.0
    vol = r.std(ddof=1) * np.sqrt(ppy)
    hit = float(np.mean(r > 0))
    return [sharpe, sortino, max(mdd, 0.0), cagr, vol, hit, equity[-1] - 1.0]

here = os.path.dirname(os.path.abspath(__file__))
for name, (r, ppy, rf) in {
    "a": ([0.01, -0.02, 0.015, 0.003, -0.007, 0.012, -0.001, 0.0, 0.02, -0.011], 252, 0.0),
    "b": ([0.05, 0.04, -0.1, -0.2, 0.3, 0.01], 12, 0.02),
}.items():
    vals = metrics(r, ppy, rf)
    with open(os.path.join(here, f"backtest_metrics_{name}.txt"), "w") as f:
        f.write("[" + ", ".join(repr(float(v)) for v in vals) + "]\n")
    print(name, vals)
