#!/usr/bin/env bash
# Ingest throughput and peak memory of `derm profile` on a large generated Jaeger file:
# decode + call trees + window statistics + profile fit, one core.
# Usage: hack/bench-ingest.sh [LOAD_SCALE] [FORMAT]
#   LOAD_SCALE 14 gives a Jaeger file of about 1 GB; FORMAT: jaeger (default), otlp or
#   otlp-protobuf (one streamed ExportTraceServiceRequest; 40 gives about 1 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-14}
format=${2:-jaeger}
dir=${DERM_BENCH_DIR:-/tmp/derm-bench-ingest}
mkdir -p "$dir"
cargo build --release -p derm-core --bin derm
derm=target/release/derm
file="$dir/traces-x$scale.$format"
if [ ! -s "$file" ]; then
  "$derm" generate --scenario acceptance --seed 7 --load-scale "$scale" --format "$format" -o "$file" 2> "$file.log"
fi
bytes=$(stat -c %s "$file")
spans=$(sed -n 's/^wrote [0-9]* traces, \([0-9]*\) spans.*/\1/p' "$file.log")
/usr/bin/time -f '%e %M' -o "$dir/time.txt" taskset -c 0 "$derm" profile --traces "$file" --out-dir "$dir/out" > "$dir/summary.txt"
read -r secs rss_kb < "$dir/time.txt"
python3 - "$bytes" "$spans" "$secs" "$rss_kb" <<'PY'
import sys
b, spans, secs, rss = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"input {b/1e9:.2f} GB, {spans} spans, {secs:.1f} s on one core: "
      f"{spans/secs/1e3:.0f}k spans/s, {b/secs/1e6:.0f} MB/s, peak RSS {rss/1024:.0f} MiB")
PY
