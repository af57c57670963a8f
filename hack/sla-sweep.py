#!/usr/bin/env python3
"""How Derm's savings depend on the SLA: `derm simulate` at multiples of a scenario's rule SLA.

The scenarios' SLA is fixed by a rule (3x the zero-load critical path of the slowest graph
with >= 2% share) before any comparison; this sweep does not replace it, it shows how far the
savings against `hpa-cpu` (whose CPU target does not read the SLA) move when the SLA is
tighter or looser. For each factor and seed it runs

    derm simulate --scenario S --seed K --sla-ms FACTOR*RULE --duration-s 3600 \
        --policies derm,derm-oracle,uniform,hpa-cpu --no-plots --out-dir OUT/S-FACTOR-K

(the factor-1 run first, without --sla-ms, to read the rule SLA from its results.json), two
at a time, and prints per factor the seeds' mean containers relative to `hpa-cpu`, window
violation rates, and `derm`'s mean predicted share of requests within the SLA over its
decisions: near 1 means the SLA constraint was slack and something else (the trust region,
the floors, the load headroom) set the plan.

    python3 hack/sla-sweep.py --scenario trainticket --seeds 1,2 --factors 0.75,1,1.5,2,4 \
        --out-dir out/sla-sweep [--derm target/release/derm]
"""

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

POLICIES = ["derm", "derm-oracle", "uniform", "hpa-cpu"]


def run(derm: str, scenario: str, seed: int, sla_ms: float | None, out: Path) -> dict:
    """One `derm simulate` run (skipped when OUT already holds its results)."""
    results = out / "results.json"
    if not results.exists():
        cmd = [derm, "simulate", "--scenario", scenario, "--seed", str(seed), "--duration-s", "3600",
               "--policies", ",".join(POLICIES), "--no-plots", "--out-dir", str(out)]
        if sla_ms is not None:
            cmd += ["--sla-ms", f"{sla_ms:.1f}"]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            why = next((x for x in lines if x.lower().startswith("error")), lines[-1] if lines else "")
            raise RuntimeError(f"{' '.join(cmd)}: {why}")
    return json.loads(results.read_text())


def predicted(out: Path) -> float:
    """`derm`'s mean predicted share of all requests within the SLA over its decisions."""
    decisions = json.loads((out / "decisions.json").read_text()).get("derm", [])
    shares = [d["all_requests_probability"] for d in decisions if d.get("all_requests_probability") is not None]
    return statistics.fmean(shares) if shares else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--factors", default="0.75,1,1.5,2,4")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--derm", default="target/release/derm")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        factors = [float(f) for f in args.factors.split(",")]
    except ValueError as e:
        print(f"sla-sweep: --seeds/--factors: {e}", file=sys.stderr)
        return 2
    if not seeds or any(f <= 0 for f in factors):
        print("sla-sweep: --factors must be positive and --seeds non-empty", file=sys.stderr)
        return 2
    out = args.out_dir
    dirs = {(f, k): out / f"{args.scenario}-{f:g}x-{k}" for f in factors for k in seeds}
    try:
        rule = run(args.derm, args.scenario, seeds[0], None, dirs.get((1.0, seeds[0]), out / f"{args.scenario}-rule"))
        sla = rule["sla_ms"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = {key: pool.submit(run, args.derm, args.scenario, key[1], None if key[0] == 1.0 else key[0] * sla, d)
                    for key, d in dirs.items()}
            results = {key: job.result() for key, job in jobs.items()}
    except (OSError, RuntimeError, json.JSONDecodeError, KeyError) as e:
        print(f"sla-sweep: {e}", file=sys.stderr)
        return 1
    print(f"{args.scenario}, rule SLA {sla:.0f} ms, seeds {args.seeds}: containers vs hpa-cpu / window violations "
          "(means over the seeds); derm's mean predicted share within the SLA")
    print()
    print("| SLA | " + " | ".join(f"`{p}`" for p in POLICIES) + " | `derm` predicted |")
    print("|---|" + "---|" * (len(POLICIES) + 1))
    for f in factors:
        cells = []
        for p in POLICIES:
            rows = [results[(f, k)]["policies"][p] for k in seeds]
            ratio = statistics.fmean(r["containers_vs_hpa"] for r in rows)
            viol = statistics.fmean(r["window_violation_rate"] for r in rows)
            cells.append(f"{ratio:.3f} / {100 * viol:.1f}%")
        pred = statistics.fmean(predicted(dirs[(f, k)]) for k in seeds)
        print(f"| {f:g}x ({f * sla:.0f} ms) | " + " | ".join(cells) + f" | {pred:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
