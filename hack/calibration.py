#!/usr/bin/env python3
"""How well a `derm simulate` run's plans predicted the windows they governed.

Joins DIR/decisions.json (each decision's predicted probability that a request meets the
SLA, over all requests) with DIR/series.json (each window's measured share within the SLA):
the decision at time t governs the window that starts at t. Prints, per profile-based
policy: the mean predicted and measured shares, how often the measured share fell below
the prediction, the mean distance of the planned mix from the true one (`mix_error`), and
the windows whose P95 exceeded the SLA (measured share below 0.95) with what their plan had
predicted.

    python3 hack/calibration.py out/sim/alibaba-3 [--windows]
"""

import argparse
import json
import statistics
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="a derm simulate --out-dir")
    ap.add_argument("--windows", action="store_true", help="list the violating windows")
    ap.add_argument("--percentile", type=float, default=0.95)
    args = ap.parse_args()
    try:
        decisions = json.loads((args.dir / "decisions.json").read_text())
        series = json.loads((args.dir / "series.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"calibration: {e}", file=sys.stderr)
        return 1
    for policy, points in decisions.items():
        windows = {round(w["start_s"]): w for w in series.get(policy, []) if w["requests"] > 0}
        rows = []
        for d in points:
            predicted = d.get("all_requests_probability")
            w = windows.get(round(d["now_s"]))
            if predicted is not None and w is not None and "within_sla" in w:
                rows.append((d["now_s"], predicted, w["within_sla"], w["p95_ms"], d.get("mix_error")))
        if not rows:
            continue
        predicted = statistics.fmean(r[1] for r in rows)
        measured = statistics.fmean(r[2] for r in rows)
        spread = statistics.pstdev(r[2] - r[1] for r in rows)
        below = sum(r[2] < r[1] for r in rows)
        late = [r for r in rows if r[2] < args.percentile]
        errors = [r[4] for r in rows if r[4] is not None]
        mix = f", mix error {statistics.fmean(errors):.4f}" if errors else ""
        print(
            f"{policy}: {len(rows)} windows, predicted {predicted:.4f}, measured {measured:.4f} "
            f"(mean gap {measured - predicted:+.4f}, sd {spread:.4f}), measured below predicted in "
            f"{below}, P95 over the SLA in {len(late)}{mix}"
        )
        if args.windows:
            for t, p, m, p95, err in late:
                e = f", mix error {err:.4f}" if err is not None else ""
                print(f"  t={t:.0f} s: predicted {p:.4f}, measured {m:.4f}, P95 {p95:.0f} ms{e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
