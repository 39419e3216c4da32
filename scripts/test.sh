#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test with CTest. GPU tests skip without a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KFLEET_BUILD_DIR:-$root/build}

bash "$root/scripts/setup.sh"
bash "$root/scripts/build.sh"
cd "$build"
ctest --output-on-failure -j "${KFLEET_JOBS:-$(nproc)}" --timeout 600
