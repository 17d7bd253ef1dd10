#!/usr/bin/env python3
"""A fake OpenAI-compatible embedding provider on 127.0.0.1, for quantops' integration tests.

It behaves like a real one, including its failures, chosen by markers in the input text:
  [400]        the whole request is refused with 400 (a bad input)
  [baddim]     this input's vector has one dimension too few
  [nan]        this input's vector holds NaN (which is not valid JSON)
  [429xN]      the first N requests containing it get 429 with Retry-After: 1
  [500xN]      the first N requests containing it get 500
  [slowxN]     the first N requests containing it take longer than any test's timeout
  [sleepN]     the request sleeps N seconds, then answers
  [lagN]       the request takes N milliseconds (once, however many of its inputs carry it)
  [always500]  every request containing it gets 500
  [leak]       the request is refused with 400 and a body that echoes a secret-looking text
  [redirect]   the request is answered 307 to /elsewhere on this server (a client that follows
               it shows up in stats["elsewhere"])
Vectors are deterministic (from SHAKE-256 of the text), Gaussian-shaped and about unit length.
GET /stats returns counts (stats["seen"]: requests received so far per marker-bearing input;
stats["max_in_flight"]: the most requests it was answering at once, any client's, abandoned ones
included; stats["lag_in_flight_max"]["[lagN]"]: the most requests carrying that marker it was
answering at once, so a test measures its own requests only); it stops by itself after
--lifetime seconds (bounded, loopback only). An optional third argument is a latency in
milliseconds added to every request (a real provider's time to answer).
Prints its port on the first line of stdout.

usage: fake_provider.py [DIMS [LIFETIME_S [LATENCY_MS]]]
"""
import hashlib, json, math, re, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIMS = int(sys.argv[1]) if len(sys.argv) > 1 else 384
LIFETIME = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
LATENCY = float(sys.argv[3]) / 1000.0 if len(sys.argv) > 3 else 0.0
lock = threading.RLock()
seen = {}          # marker-bearing text -> requests seen
stats = {"requests": 0, "vectors": 0, "by_status": {}, "authorization": None, "texts": {}, "in_flight": 0, "max_in_flight": 0}


# A vector's components: 256 values, the normal distribution's quantiles, scaled and written
# with 7 decimals as a real provider writes its floats; one byte of the text's
# SHAKE-256 digest picks each. The vector is deterministic and about unit length, and its JSON is
# joined from the table's strings: the provider spends microseconds a vector, not a millisecond,
# so on a small machine it leaves the cores to the database side under test.
def _quantile(p):
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


_Q = [_quantile((i + 0.5) / 256) for i in range(256)]
_SCALE = math.sqrt(256 / sum(q * q for q in _Q) / DIMS)  # the table's mean square is 1 / DIMS
COMPONENTS = ["%.7f" % (q * _SCALE) for q in _Q]


def vector_json(text, dims):
    return ", ".join([COMPONENTS[b] for b in hashlib.shake_256(text.encode()).digest(dims)])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, status, body, headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        with lock:
            stats["by_status"][str(status)] = stats["by_status"].get(str(status), 0) + 1

    def do_GET(self):
        with lock:
            self.send(200, json.dumps(stats))

    def do_POST(self):
        with lock:
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            if LATENCY > 0:
                time.sleep(LATENCY)
            return self.answer()
        finally:
            with lock:
                stats["in_flight"] -= 1

    def answer(self):
        if self.path.startswith("/elsewhere"):
            with lock:
                stats["elsewhere"] = stats.get("elsewhere", 0) + 1
            return self.send(200, json.dumps({"object": "list", "data": []}))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions", DIMS))
        with lock:
            stats["requests"] += 1
            stats["authorization"] = self.headers.get("Authorization")
            counts = {}
            for t in inputs:
                if "[" in t:
                    seen[t] = seen.get(t, 0) + 1
                    stats.setdefault("seen", {})[t] = seen[t]
                counts[t] = seen.get(t, 0)
        for t in inputs:
            m = re.search(r"\[sleep(\d+)\]", t)
            if m:
                time.sleep(int(m.group(1)))
        lags = [int(m.group(1)) for t in inputs for m in [re.search(r"\[lag(\d+)\]", t)] if m]
        if not lags:
            return self.rest(inputs, counts, body, dims)
        key = "[lag%d]" % max(lags)
        with lock:
            now = stats.setdefault("lag_in_flight", {}).get(key, 0) + 1
            stats["lag_in_flight"][key] = now
            peak = stats.setdefault("lag_in_flight_max", {})
            peak[key] = max(peak.get(key, 0), now)
        try:
            time.sleep(max(lags) / 1000.0)
            return self.rest(inputs, counts, body, dims)
        finally:
            with lock:
                stats["lag_in_flight"][key] -= 1

    def rest(self, inputs, counts, body, dims):
        # the transient failures first, over the whole request: the first N requests containing
        # an [429xN] or [500xN] input get that answer, whatever else the request holds
        for kind, status in (("429", 429), ("500", 500)):
            for t in inputs:
                m = re.search(r"\[%sx(\d+)\]" % kind, t)
                if m and counts[t] <= int(m.group(1)):
                    return self.send(status, json.dumps({"error": {"message": f"fake {status}"}}), {"Retry-After": "1"} if status == 429 else None)
        for t in inputs:
            m = re.search(r"\[slowx(\d+)\]", t)
            if m and counts[t] <= int(m.group(1)):
                time.sleep(5)
                return self.send(504, "{}")
            if "[always500]" in t:
                return self.send(500, json.dumps({"error": {"message": "fake outage"}}))
            if "[400]" in t:
                return self.send(400, json.dumps({"error": {"message": "invalid input"}}))
            if "[leak]" in t:
                return self.send(400, json.dumps({"error": {"message": "SECRET-BODY internal host 10.1.2.3 says no"}}))
            if "[redirect]" in t:
                return self.send(307, "{}", {"Location": "http://127.0.0.1:%d/elsewhere" % self.server.server_address[1]})
        items = []
        for i, t in enumerate(inputs):
            v = vector_json(t, dims - 1 if "[baddim]" in t else dims)
            items.append('{"object": "embedding", "index": %d, "embedding": [%s]}' % (i, v))
        text = '{"object": "list", "data": [%s], "model": %s}' % (", ".join(items), json.dumps(body.get("model")))
        for i, t in enumerate(inputs):
            if "[nan]" in t:
                # the embedding of this input becomes [NaN, ...]: not valid JSON, as from a broken model
                text = text.replace('"index": %d, "embedding": [' % i, '"index": %d, "embedding": [NaN, ' % i, 1)
        with lock:
            stats["vectors"] += len(inputs)
            for t in inputs:
                stats["texts"][t] = stats["texts"].get(t, 0) + 1
        self.send(200, text)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
threading.Timer(LIFETIME, server.shutdown).start()
server.serve_forever()
