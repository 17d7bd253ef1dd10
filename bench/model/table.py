"""Prints bench/model.sh's table from the JSON lines of model_bench and onnx_reference.py (stdin)."""
import json, os, sys

rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(f"{os.cpu_count()} cores; {rows[0]['sentences']:,} sentences, all-MiniLM-L6-v2 fp32")
head = ("engine", "threads", "seconds", "sentences/s", "vs onnxruntime", "ms/sentence")
print(f"  {head[0]:28s} {head[1]:>7s} {head[2]:>8s} {head[3]:>12s} {head[4]:>15s} {head[5]:>12s}")
for t in (1, 2):
    q = next(r for r in rows if r["threads"] == t and r["engine"].startswith("quantops"))
    o = next(r for r in rows if r["threads"] == t and r["engine"].startswith("onnxruntime"))
    for r in (q, o):
        ms = 1000 * r["seconds"] / r["sentences"]
        print(f"  {r['engine']:28s} {t:7d} {r['seconds']:8.3f} {r['per_s']:12.1f} {r['per_s'] / o['per_s']:15.2f} {ms:12.2f}")
