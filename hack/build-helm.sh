#!/usr/bin/env bash
# Build helm from the Go module proxy (no release tarball download), cached by version under
# ${DERM_CACHE:-$HOME/.cache/derm}/bin/helm-<version>/helm. Prints the binary's path on the last
# line. A no-op when it is already built.
#   DERM_HELM_VERSION  helm.sh/helm/v3 version (default v3.22.0)
#   DERM_CACHE         cache root (default $HOME/.cache/derm)
set -euo pipefail

VERSION="${DERM_HELM_VERSION:-v3.22.0}"
CACHE="${DERM_CACHE:-$HOME/.cache/derm}"
OUT="$CACHE/bin/helm-$VERSION"
if [[ -x "$OUT/helm" ]]; then
  echo "$OUT/helm"
  exit 0
fi
command -v go >/dev/null || { echo "build-helm: go is needed (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$OUT.tmp"
# The version stamp makes `helm version` honest; CGO off gives a static binary like upstream's.
CGO_ENABLED=0 GOBIN="$OUT.tmp" go install \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION" \
  "helm.sh/helm/v3/cmd/helm@$VERSION"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT/helm"
