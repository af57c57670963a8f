#!/usr/bin/env python3
"""A stand-in for Prometheus's instant-query API over a file of traces, for the end-to-end
tests: `GET /api/v1/query?query=Q&time=T` answers each service's calls per second over the
range `[T - N, T)`, N the seconds of the query's first `[Ns]` range (the adapter writes the
DermApp's interval there), as a mesh's request counter would give them: the spans of each
service that started in the range, divided by the traces' sampling ratio and by N. One series
per service, labelled `destination_workload`. The file is what `derm generate --format
jaeger` writes. Served on 127.0.0.1 only.

Usage: fake-prometheus.py TRACES.json SAMPLING PORT
"""

import bisect
import json
import re
import sys
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def load(path):
    """Every span as (start in microseconds, service), sorted by start."""
    calls = []
    for t in json.load(open(path))["data"]:
        names = {pid: p["serviceName"] for pid, p in t["processes"].items()}
        calls.extend((s["startTime"], names[s["processID"]]) for s in t["spans"])
    calls.sort()
    return calls


class Handler(BaseHTTPRequestHandler):
    calls = []
    starts = []
    sampling = 1.0

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/api/v1/query":
            return self.reply(404, {"status": "error", "errorType": "not_found", "error": url.path})
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        m = re.search(r"\[(\d+)s\]", q.get("query", ""))
        try:
            end, seconds = float(q["time"]), int(m.group(1))
        except (KeyError, ValueError, AttributeError) as e:
            return self.reply(400, {"status": "error", "errorType": "bad_data", "error": f"bad query: {e!r}"})
        lo = bisect.bisect_left(self.starts, (end - seconds) * 1e6)
        hi = bisect.bisect_left(self.starts, end * 1e6)
        counts = defaultdict(int)
        for _, service in self.calls[lo:hi]:
            counts[service] += 1
        result = [
            {"metric": {"destination_workload": s}, "value": [end, str(n / self.sampling / seconds)]}
            for s, n in sorted(counts.items())
        ]
        self.reply(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-prometheus: " + fmt % args + "\n")


def main():
    path, sampling, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    Handler.calls = load(path)
    Handler.starts = [s for (s, _) in Handler.calls]
    Handler.sampling = sampling
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"fake-prometheus: {len(Handler.calls)} calls on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
