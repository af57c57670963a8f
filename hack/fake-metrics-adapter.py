#!/usr/bin/env python3
"""A minimal external.metrics.k8s.io/v1beta1 server: hack/probe-aggregation.sh uses it to check
the cluster's aggregation wiring (front-proxy CA, proxy-client certificate, ExternalName
Service, APIService caBundle) without the real adapter, and hack/e2e-adapter.sh as the adapter
that `derm-adapter serve --upstream` replaces (it logs the bearer token Derm forwards with).

Usage: fake-metrics-adapter.py PORT CERT KEY FRONT_PROXY_CA VALUES_JSON_FILE
VALUES_JSON_FILE maps metric name to a Quantity string, e.g. {"derm_probe_metric": "7"};
it is re-read on every request. Each request is logged as one JSON line on stdout.
"""
import datetime
import json
import re
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, CERT, KEY, CLIENT_CA, VALUES = sys.argv[1:6]
GV = "external.metrics.k8s.io/v1beta1"
ITEM_PATH = re.compile(r"^/apis/external\.metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/([^/]+)$")


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server naming)
        cert = self.connection.getpeercert() or {}
        subject = dict(x[0] for x in cert.get("subject", ()))
        print(json.dumps({"path": self.path, "client_cn": subject.get("commonName"),
                          "x_remote_user": self.headers.get("X-Remote-User"),
                          "x_remote_group": self.headers.get_all("X-Remote-Group"),
                          "authorization": self.headers.get("Authorization")}), flush=True)
        path = self.path.split("?", 1)[0]
        if path == "/apis/" + GV:
            return self._send(200, {
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV,
                "resources": [{"name": "externalmetrics", "singularName": "", "namespaced": True,
                               "kind": "ExternalMetricValueList", "verbs": ["get"]}]})
        m = ITEM_PATH.match(path)
        if m:
            with open(VALUES) as f:
                values = json.load(f)
            if m.group(2) in values:
                now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                return self._send(200, {
                    "kind": "ExternalMetricValueList", "apiVersion": GV, "metadata": {},
                    "items": [{"metricName": m.group(2), "metricLabels": {}, "timestamp": now,
                               "value": values[m.group(2)]}]})
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404})

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
ctx.load_verify_locations(CLIENT_CA)
ctx.verify_mode = ssl.CERT_OPTIONAL
server = ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
