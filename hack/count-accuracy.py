#!/usr/bin/env python3
"""How close a Prometheus query's per-service call rates come to the exact counts of each
interval: for every interval [end - INTERVAL, end) that ended since ORIGIN, asks
`GET {URL}/api/v1/query?query=Q&time=end` as the adapter does ($interval replaced) and compares
each service's rate with the spans of a `derm generate --format jaeger` file that started in
the interval, over the sampling ratio. The first interval with data is skipped (Prometheus
started inside it). Prints each interval, then the relative error per service and the error of
the share of calls `--ratio A/B` (e.g. order/frontend: the acceptance scenario's complex graph
share).

Usage: count-accuracy.py TRACES.json SAMPLING URL ORIGIN_S INTERVAL_S QUERY [--ratio A/B]
"""

import argparse
import bisect
import json
import time
import urllib.parse
import urllib.request

from jaeger_spans import span_starts


def query(url, q, at):
    args = urllib.parse.urlencode({"query": q, "time": at})
    with urllib.request.urlopen(f"{url}/api/v1/query?{args}") as r:
        body = json.load(r)
    return {s["metric"].get("destination_workload", ""): float(s["value"][1]) for s in body["data"]["result"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("traces")
    p.add_argument("sampling", type=float)
    p.add_argument("url")
    p.add_argument("origin_s", type=int)
    p.add_argument("interval_s", type=int)
    p.add_argument("query")
    p.add_argument("--ratio", default="order/frontend")
    a = p.parse_args()
    calls = span_starts(a.traces)
    q = a.query.replace("$interval", f"{a.interval_s}s")
    num, den = a.ratio.split("/")
    errors, ratio_errors, skipped = [], [], False
    end = a.origin_s + a.interval_s
    while end <= time.time() - 3:
        got = query(a.url, q, end)
        exact = {}
        for service, starts in calls.items():
            n = bisect.bisect_left(starts, end * 1e6) - bisect.bisect_left(starts, (end - a.interval_s) * 1e6)
            exact[service] = n / a.sampling / a.interval_s
        end += a.interval_s
        if not got or not skipped:
            skipped = skipped or bool(got)
            continue
        row = [f"{s} {got.get(s, 0.0):.2f}/{e:.2f}" for s, e in sorted(exact.items()) if e > 0]
        errors += [abs(got.get(s, 0.0) / e - 1) for s, e in exact.items() if e > 0]
        if got.get(den) and exact.get(den):
            ratio_errors.append(abs(got.get(num, 0.0) / got[den] - exact.get(num, 0.0) / exact[den]))
        print(f"{end - a.interval_s}: " + "; ".join(row))
    if not errors:
        raise SystemExit("no interval with data yet")
    errors.sort()
    print(f"{len(ratio_errors)} intervals; per-service rate vs exact: mean {sum(errors) / len(errors):.4f}, "
          f"median {errors[len(errors) // 2]:.4f}, max {errors[-1]:.4f} (relative)")
    if ratio_errors:
        print(f"{a.ratio}: mean {sum(ratio_errors) / len(ratio_errors):.4f}, max {max(ratio_errors):.4f} (absolute)")


if __name__ == "__main__":
    main()
