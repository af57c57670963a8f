#!/usr/bin/env bash
# Build a real Prometheus server from Go modules (CGO_ENABLED=0) into the cache that
# hack/build-control-plane.sh uses, for the end-to-end call-count checks. Idempotent: a binary
# that answers --version with the right version is not rebuilt. Prints the binary's path.
#
# Usage: hack/build-prometheus.sh [VERSION]      (default v0.316.0, Prometheus 3.16.0)
#
# Environment: DERM_CACHE (default $HOME/.cache/derm), DERM_NICE (default 10).
# Layout: <cache>/prometheus/<version>/ wrapper module; <cache>/bin/prometheus-<version>/prometheus.
set -euo pipefail

VERSION="${1:-v0.316.0}"
CACHE="${DERM_CACHE:-$HOME/.cache/derm}"
NICE="${DERM_NICE:-10}"
MODULE=github.com/prometheus/prometheus
WD="$CACHE/prometheus/$VERSION"
OUT="$CACHE/bin/prometheus-$VERSION/prometheus"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH"
if [[ -x "$OUT" ]] && "$OUT" --version 2>/dev/null | grep -qF "version $VERSION"; then
  log "prometheus $VERSION already built"
  echo "$OUT"
  exit 0
fi

mkdir -p "$WD" "$(dirname "$OUT")"
t0=$SECONDS
# A wrapper module: the server module's own replace and exclude lines do not apply there, which
# `go install module@version` would refuse.
if [[ ! -f "$WD/.resolved" ]]; then
  printf 'module derm.local/prometheus-build\n\ngo 1.26\n' >"$WD/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/prometheus"\n' "$MODULE" >"$WD/tools.go"
  rm -f "$WD/go.sum"
  (cd "$WD" && nice -n "$NICE" go get "$MODULE@$VERSION" && nice -n "$NICE" go mod tidy) \
    || die "resolving $MODULE@$VERSION failed (see messages above)"
  touch "$WD/.resolved"
fi
(cd "$WD" && nice -n "$NICE" go build -trimpath \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$VERSION" \
  -o "$OUT.tmp" "$MODULE/cmd/prometheus") || die "go build of $MODULE/cmd/prometheus@$VERSION failed"
mv -f "$OUT.tmp" "$OUT"
log "prometheus $VERSION built in $((SECONDS - t0)) s"
"$OUT" --version 2>/dev/null | grep -qF "version $VERSION" || die "$OUT does not report version $VERSION"
echo "$OUT"
