#!/usr/bin/env bash
# Configures and builds kfleet into ${KFLEET_BUILD_DIR:-build}. Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KFLEET_BUILD_DIR:-$root/build}
jobs=${KFLEET_JOBS:-$(nproc)}

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${KFLEET_BUILD_TYPE:-RelWithDebInfo}" "$@"
cmake --build "$build" -j "$jobs"
