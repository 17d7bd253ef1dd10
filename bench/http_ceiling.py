#!/usr/bin/env python3
"""The ceiling of the HTTP embedding path: a client with no database that sends the worker's
requests (the same texts, the same batch size, the same number in flight) to the same provider.
What it reaches is what the provider can serve on this machine.

usage: http_ceiling.py URL ROWS BATCH CONCURRENCY    prints: vectors/s
"""
import json, sys, threading, time, urllib.request

url, rows, batch, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
texts = [f"bench memory {g}: momentum breakout above the 50 day high on volume" for g in range(1, rows + 1)]
batches = [texts[i:i + batch] for i in range(0, rows, batch)]
lock = threading.Lock()
done = [0]


def worker():
    while True:
        with lock:
            if not batches:
                return
            b = batches.pop()
        body = json.dumps({"model": "fake-embed-1", "input": b, "encoding_format": "float"}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        assert len(answer["data"]) == len(b)
        with lock:
            done[0] += len(b)


t0 = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
assert done[0] == rows, (done[0], rows)
print(f"{rows / elapsed:.0f}")
