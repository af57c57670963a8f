#!/usr/bin/env python3
"""A service mesh's request counters over a file of traces, for a real Prometheus to scrape in
the end-to-end tests: `GET /metrics` answers, in Prometheus's text format, the counter
`istio_requests_total{reporter="destination", destination_workload=S}` of every service S:
the spans of S that started before now, divided by the traces' sampling ratio (a mesh counts
every call; the traces keep a sample). A `reporter="source"` copy counts each call again, as
Istio's client-side proxies do, so a query that forgets the reporter filter counts double.
The file is what `derm generate --format jaeger` writes. Served on 127.0.0.1 only.

Usage: mesh-counters.py TRACES.json SAMPLING PORT
"""

import bisect
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jaeger_spans import span_starts


class Handler(BaseHTTPRequestHandler):
    starts = {}
    sampling = 1.0

    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        now_us = time.time() * 1e6
        lines = ["# TYPE istio_requests_total counter"]
        for service, starts in sorted(self.starts.items()):
            calls = bisect.bisect_right(starts, now_us) / self.sampling
            for reporter in ("destination", "source"):
                labels = f'reporter="{reporter}",destination_workload="{service}"'
                lines.append(f"istio_requests_total{{{labels}}} {calls}")
        data = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


def main():
    path, sampling, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    Handler.starts = span_starts(path)
    Handler.sampling = sampling
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"mesh-counters: {len(Handler.starts)} services on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
