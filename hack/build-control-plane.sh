#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) and etcd from Go modules, CGO_ENABLED=0, into a cache
# outside the repository. Idempotent: binaries that exist and answer --version with
# the right version are not rebuilt.
#
# Usage: hack/build-control-plane.sh [VERSION]      (default v1.36.3)
#
# Environment:
#   DERM_CACHE          cache root (default $HOME/.cache/derm)
#   DERM_ETCD_VERSION   etcd server module version (default v3.6.16)
#   DERM_BUILD_KUBECTL  1 (default) builds kubectl of the same version, 0 skips it
#   DERM_NO_FALLBACK    1: do not fall back to v1.35.4 when VERSION fails
#   DERM_NICE           nice level for the Go builds (default 10)
#
# Layout:
#   <cache>/control-plane/<version>/   wrapper Go module for k8s.io/kubernetes
#   <cache>/etcd/<etcd-version>/       wrapper Go module for go.etcd.io/etcd/server/v3
#   <cache>/bin/<version>/             kube-apiserver kube-controller-manager kube-scheduler kubectl etcd
#   <cache>/bin/current -> <version>   last version built successfully
#   <cache>/timings.log                one line per build step with its wall time
set -euo pipefail

DEFAULT_VERSION=v1.36.3
FALLBACK_VERSION=v1.35.4
ETCD_VERSION="${DERM_ETCD_VERSION:-v3.6.16}"
CACHE="${DERM_CACHE:-$HOME/.cache/derm}"
BUILD_KUBECTL="${DERM_BUILD_KUBECTL:-1}"
NICE="${DERM_NICE:-10}"
TIMINGS="$CACHE/timings.log"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

record_time() { # step version seconds
  mkdir -p "$CACHE"
  printf '%s\t%s\t%s\t%ss\tcores=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$2" "$1" "$3" "$(nproc)" >>"$TIMINGS"
  log "$1 ($2) took $3 s"
}

command -v go >/dev/null || die "go not found in PATH"

# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
k8s_bins() {
  echo kube-apiserver kube-controller-manager kube-scheduler
  if [[ "$BUILD_KUBECTL" == 1 ]]; then echo kubectl; fi
}

bin_ok() { # path expected-substring
  local out
  [[ -x "$1" ]] || return 1
  case "$(basename "$1")" in
    kubectl) out="$("$1" version --client 2>/dev/null)" || return 1 ;;
    *) out="$("$1" --version 2>/dev/null)" || return 1 ;;
  esac
  grep -qF -- "$2" <<<"$out"
}

all_ok() { # version
  local v="$1" dir="$CACHE/bin/$1" b
  for b in $(k8s_bins); do bin_ok "$dir/$b" "$v" || return 1; done
  bin_ok "$dir/etcd" "${ETCD_VERSION#v}" || return 1
}

# ---------------------------------------------------------------------------
# etcd: separate wrapper module (its own replace lines are ignored there)
# ---------------------------------------------------------------------------
build_etcd() {
  local out="$CACHE/bin/etcd-$ETCD_VERSION/etcd" wd="$CACHE/etcd/$ETCD_VERSION"
  if bin_ok "$out" "${ETCD_VERSION#v}"; then
    log "etcd $ETCD_VERSION already built: $out"
    return 0
  fi
  mkdir -p "$wd" "$(dirname "$out")"
  local modjson gomod godirective t0
  modjson="$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION")" \
    || die "module go.etcd.io/etcd/server/v3@$ETCD_VERSION is not available"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$modjson")"
  godirective="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  local newmod
  newmod="$(printf 'module derm.local/etcd-build\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "${godirective:-1.26.0}" "$ETCD_VERSION")"
  # Regenerate and resolve only when the wrapper changed (keeps go.sum cached).
  if [[ ! -f "$wd/.resolved" ]] || [[ "$(cat "$wd/go.mod.gen" 2>/dev/null)" != "$newmod" ]]; then
    printf '%s\n' "$newmod" >"$wd/go.mod"
    printf '%s\n' "$newmod" >"$wd/go.mod.gen"
    rm -f "$wd/go.sum" "$wd/.resolved"
    t0=$SECONDS
    (cd "$wd" && nice -n "$NICE" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION") \
      || die "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION failed (see messages above)"
    touch "$wd/.resolved"
    record_time etcd-resolve "$ETCD_VERSION" $((SECONDS - t0))
  fi
  t0=$SECONDS
  (cd "$wd" && nice -n "$NICE" go build -trimpath -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3) \
    || die "building etcd $ETCD_VERSION failed"
  mv -f "$out.tmp" "$out"
  record_time etcd-build "$ETCD_VERSION" $((SECONDS - t0))
  bin_ok "$out" "${ETCD_VERSION#v}" || die "built etcd does not report version $ETCD_VERSION"
}

# ---------------------------------------------------------------------------
# kubernetes: wrapper module with one replace per staging module
# ---------------------------------------------------------------------------
build_k8s() { # version
  local v="$1" wd="$CACHE/control-plane/$1" bindir="$CACHE/bin/$1"
  local major minor patch
  [[ "$v" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "version must look like v1.N.P, got $v"
  major=1 minor="${BASH_REMATCH[1]}" patch="${BASH_REMATCH[2]}"
  local staging_v="v0.$minor.$patch"
  mkdir -p "$wd" "$bindir"

  local need=() b
  for b in $(k8s_bins); do bin_ok "$bindir/$b" "$v" || need+=("$b"); done
  if [[ ${#need[@]} -eq 0 ]]; then
    log "kubernetes $v binaries already built in $bindir"
    return 0
  fi
  log "building ${need[*]} for kubernetes $v"

  local modjson gomod godirective t0
  modjson="$(go mod download -json "k8s.io/kubernetes@$v" 2>&1)" \
    || die "module k8s.io/kubernetes@$v is not available: $modjson"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$modjson")"
  [[ -f "$gomod" ]] || die "no go.mod path for k8s.io/kubernetes@$v in: $modjson"
  godirective="$(awk '$1=="go"{print $2; exit}' "$gomod")"

  # The staging modules, straight from this exact version's go.mod.
  local staging
  staging="$(awk '$2=="=>" && $3 ~ /^\.\/staging\/src\/k8s\.io\// {print $1}' "$gomod" | sort -u)"
  [[ -n "$staging" ]] || die "no ./staging/src replace lines found in $gomod"
  log "$(wc -l <<<"$staging") staging modules, replaced with $staging_v; go directive $godirective"

  local newmod
  newmod="$(
    printf 'module derm.local/control-plane\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$godirective" "$v"
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_v"; done <<<"$staging"
    printf ')\n'
  )"
  # Regenerate only when the replace set changed (keeps go.sum and resolution cached).
  if [[ ! -f "$wd/go.mod.gen" ]] || [[ "$(cat "$wd/go.mod.gen")" != "$newmod" ]]; then
    printf '%s\n' "$newmod" >"$wd/go.mod"
    printf '%s\n' "$newmod" >"$wd/go.mod.gen"
    rm -f "$wd/go.sum" "$wd/.resolved"
  fi

  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  if [[ ! -f "$wd/.resolved" ]]; then
    t0=$SECONDS
    local getlog="$wd/go-get.log"
    if ! (cd "$wd" && nice -n "$NICE" go get "${pkgs[@]/%/@$v}") >"$getlog" 2>&1; then
      log "resolving the module graph for kubernetes $v failed; modules named in the errors:"
      grep -E 'go: |verifying|not found|unknown revision|invalid version|410 Gone|404 Not Found' "$getlog" \
        | grep -v '^go: downloading' | tail -n 20 >&2 || tail -n 20 "$getlog" >&2
      die "module resolution failed for kubernetes $v (full log: $getlog)"
    fi
    touch "$wd/.resolved"
    record_time k8s-resolve "$v" $((SECONDS - t0))
  fi

  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done

  # Control plane in one go build (shared packages compiled once, best parallelism).
  local cp=()
  for b in "${need[@]}"; do [[ "$b" == kubectl ]] || cp+=("k8s.io/kubernetes/cmd/$b"); done
  local tmp="$bindir/.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  if [[ ${#cp[@]} -gt 0 ]]; then
    t0=$SECONDS
    (cd "$wd" && nice -n "$NICE" go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${cp[@]}") \
      || die "go build of ${cp[*]} ($v) failed"
    record_time k8s-build-control-plane "$v" $((SECONDS - t0))
  fi
  if [[ " ${need[*]} " == *" kubectl "* ]]; then
    t0=$SECONDS
    (cd "$wd" && nice -n "$NICE" go build -trimpath -ldflags "$ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl) \
      || die "go build of kubectl ($v) failed"
    record_time k8s-build-kubectl "$v" $((SECONDS - t0))
  fi
  mv -f "$tmp"/* "$bindir/"
  rmdir "$tmp"
  for b in $(k8s_bins); do bin_ok "$bindir/$b" "$v" || die "$bindir/$b does not report $v"; done
}

build_one() { # version
  local v="$1" t0=$SECONDS
  build_etcd
  build_k8s "$v"
  cp -f "$CACHE/bin/etcd-$ETCD_VERSION/etcd" "$CACHE/bin/$v/etcd.tmp"
  mv -f "$CACHE/bin/$v/etcd.tmp" "$CACHE/bin/$v/etcd"
  all_ok "$v" || die "binaries in $CACHE/bin/$v fail their --version check"
  ln -sfn "$v" "$CACHE/bin/current"
  record_time total "$v" $((SECONDS - t0))
}

main() {
  local v="${1:-$DEFAULT_VERSION}"
  mkdir -p "$CACHE/bin"
  if all_ok "$v"; then
    ln -sfn "$v" "$CACHE/bin/current"
    log "kubernetes $v and etcd $ETCD_VERSION already built"
    echo "$CACHE/bin/$v"
    return 0
  fi

  # One build at a time per cache.
  exec 9>"$CACHE/.build.lock"
  flock 9

  if [[ "${DERM_NO_FALLBACK:-0}" == 1 || "$v" == "$FALLBACK_VERSION" ]]; then
    build_one "$v"
  else
    # A child process so that set -e applies inside the attempt.
    if ! DERM_NO_FALLBACK=1 DERM_BUILD_CHILD=1 "$0" "$v" >/dev/null; then
      log "kubernetes $v could not be built (reason above); falling back to $FALLBACK_VERSION"
      rmdir "$CACHE/bin/$v" 2>/dev/null || true
      v="$FALLBACK_VERSION"
      build_one "$v"
    fi
  fi
  local b
  log "binaries in $CACHE/bin/$v ($CACHE/bin/current points there):"
  for b in $(k8s_bins) etcd; do log "  $(du -h "$CACHE/bin/$v/$b" | cut -f1)  $CACHE/bin/$v/$b"; done
  log "timings: $TIMINGS"
  echo "$CACHE/bin/$v"
}

if [[ "${DERM_BUILD_CHILD:-0}" == 1 ]]; then
  # Child attempt: the parent already holds the lock.
  v="${1:-$DEFAULT_VERSION}"
  mkdir -p "$CACHE/bin"
  build_one "$v"
  echo "$CACHE/bin/$v"
else
  main "$@"
fi
