#!/usr/bin/env bash
# Install libtorch for tch (the `lstm` feature of derm-core): torch from PyPI into a virtualenv
# cached outside the clone, keyed by the torch version, so CI and sessions on one machine share
# it. Idempotent: a venv whose torch imports with the right version is reused.
#
# Usage: eval "$(hack/install-libtorch.sh)"   (progress on stderr, the exports on stdout)
#
# Environment:
#   DERM_CACHE          cache root (default $HOME/.cache/derm)
#   DERM_TORCH_VERSION  torch version (default 2.13.0, the one tch 0.26 expects)
#   PYTHON              interpreter for the venv (default python3)
set -euo pipefail

VERSION="${DERM_TORCH_VERSION:-2.13.0}"
CACHE="${DERM_CACHE:-$HOME/.cache/derm}"
VENV="$CACHE/torch-$VERSION"
PY="${PYTHON:-python3}"

installed() {
  [[ -x "$VENV/bin/python" ]] &&
    [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch").split("+")[0])' 2>/dev/null)" == "$VERSION" ]] &&
    [[ -f "$(lib_dir)/libtorch_cpu.so" ]]
}

# torch/lib of the venv, found without importing torch (which takes seconds).
lib_dir() {
  "$VENV/bin/python" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("torch").origin), "lib"))' 2>/dev/null
}

if ! installed; then
  echo "installing torch==$VERSION into $VENV (about 4.7 GB, a few minutes)" >&2
  mkdir -p "$CACHE"
  # Build in a sibling directory and move into place, so an interrupted install is never reused.
  tmp="$VENV.partial.$$"
  rm -rf "$tmp"
  "$PY" -m venv "$tmp"
  "$tmp/bin/pip" install --quiet --disable-pip-version-check --no-input "torch==$VERSION" >&2
  rm -rf "$VENV"
  mv "$tmp" "$VENV"
  # A venv's scripts name its path; recreate them for the final location.
  "$PY" -m venv --upgrade "$VENV" >/dev/null
  installed || { echo "torch $VERSION did not import from $VENV" >&2; exit 1; }
fi

LIB="$(lib_dir)"
cat <<ENV
export DERM_TORCH_VENV='$VENV'
export LIBTORCH_USE_PYTORCH=1
export PATH='$VENV/bin':"\$PATH"
export LD_LIBRARY_PATH='$LIB'"\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
