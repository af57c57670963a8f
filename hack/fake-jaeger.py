#!/usr/bin/env python3
"""A stand-in for Jaeger's query service (v1 API) over a file of traces, for the end-to-end
tests: `GET /api/traces?service=S&start=US&end=US&limit=N` answers `{"data": [...]}` with the
traces of the file that reach service S and whose first span started in [start, end), at most
N, earliest first; an empty range is `{"data": []}` as Jaeger v1 answers. The file is what
`derm generate --format jaeger` writes. Served on 127.0.0.1 only.

Usage: fake-jaeger.py TRACES.json PORT
"""

import bisect
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def load(path):
    traces = json.load(open(path))["data"]
    index = []
    for t in traces:
        start = min(s["startTime"] for s in t["spans"])
        services = {p["serviceName"] for p in t["processes"].values()}
        index.append((start, services, t))
    index.sort(key=lambda x: x[0])
    return index


class Handler(BaseHTTPRequestHandler):
    index = []
    starts = []

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/api/traces":
            return self.reply(404, {"errors": [{"code": 404, "msg": f"no route {url.path}"}]})
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            service, start, end = q["service"], int(q["start"]), int(q["end"])
            limit = int(q.get("limit", "20"))
        except (KeyError, ValueError) as e:
            return self.reply(400, {"errors": [{"code": 400, "msg": f"bad query: {e}"}]})
        lo = bisect.bisect_left(self.starts, start)
        hi = bisect.bisect_left(self.starts, end)
        found = [t for (_, services, t) in self.index[lo:hi] if service in services][:limit]
        self.reply(200, {"data": found, "total": len(found), "limit": 0, "offset": 0, "errors": None})

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-jaeger: " + fmt % args + "\n")


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    Handler.index = load(path)
    Handler.starts = [s for (s, _, _) in Handler.index]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"fake-jaeger: {len(Handler.index)} traces on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
