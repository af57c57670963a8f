"""Span start times of a `derm generate --format jaeger` file, shared by hack/mesh-counters.py
(the counters it serves) and hack/count-accuracy.py (the exact counts it compares with)."""

import json
from collections import defaultdict


def span_starts(path):
    """Each service's span starts in microseconds, sorted."""
    starts = defaultdict(list)
    with open(path) as f:
        for t in json.load(f)["data"]:
            names = {pid: p["serviceName"] for pid, p in t["processes"].items()}
            for s in t["spans"]:
                starts[names[s["processID"]]].append(s["startTime"])
    return {service: sorted(v) for service, v in starts.items()}
