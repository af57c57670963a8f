#!/usr/bin/env bash
# Run a command with libtorch on the build and library paths (installing it first if needed):
#   hack/with-libtorch.sh cargo test -p derm-core --release --features lstm
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
eval "$("$here/install-libtorch.sh")"
exec "$@"
