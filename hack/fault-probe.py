#!/usr/bin/env python3
"""First-touch cost of anonymous memory on this machine (README, Optimizer: the first solve).

Maps SIZE_MB of fresh anonymous memory per trial and touches one byte per 4 KiB page, as an
evaluator's scratch is first written. Modes: `4k` (plain pages), `populate` (one
MADV_POPULATE_WRITE call, no per-page trap), `huge` (MADV_HUGEPAGE; needs transparent huge
pages in `madvise` or `always` mode). Run each trial in a fresh process (the default) to see
what a one-shot `derm solve` sees.

    python3 hack/fault-probe.py [--size-mb 6] [--trials 8] [--gap-s 0] MODE...
"""
import argparse
import mmap
import subprocess
import sys
import time

MADV_POPULATE_WRITE = 23  # Linux 5.14


def trial(mode: str, size: int) -> float:
    m = mmap.mmap(-1, size + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if mode == "huge":
        m.madvise(mmap.MADV_HUGEPAGE)
    t = time.perf_counter()
    if mode == "populate":
        m.madvise(MADV_POPULATE_WRITE, 0, size)
    for off in range(0, size, 4096):
        m[off] = 1
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modes", nargs="+", choices=["4k", "populate", "huge"])
    ap.add_argument("--size-mb", type=float, default=6.0)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--gap-s", type=float, default=0.0, help="pause between fresh processes")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    size = int(a.size_mb * (1 << 20)) // 4096 * 4096
    if a.one:
        print(f"{trial(a.one, size):.3f}")
        return
    for mode in a.modes:
        ms = []
        for _ in range(a.trials):
            time.sleep(a.gap_s)
            out = subprocess.run(
                [sys.executable, __file__, "--one", mode, "--size-mb", str(a.size_mb), mode],
                check=True, capture_output=True, text=True,
            ).stdout
            ms.append(float(out))
        pages = size // 4096
        ms_sorted = sorted(ms)
        print(
            f"{mode:8} {a.size_mb:g} MB, {a.trials} fresh processes: median {ms_sorted[len(ms) // 2]:.2f} ms "
            f"({1e3 * ms_sorted[len(ms) // 2] / pages:.2f} us per 4 KiB page), min {ms_sorted[0]:.2f}, "
            f"max {ms_sorted[-1]:.2f}: {' '.join(f'{x:.2f}' for x in ms)}"
        )


if __name__ == "__main__":
    main()
