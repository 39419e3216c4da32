#!/usr/bin/env bash
# Installs dependencies, builds, and runs what kfleet does today on this machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KFLEET_BUILD_DIR:-$root/build}

bash "$root/scripts/setup.sh"
bash "$root/scripts/build.sh" >/dev/null
echo
"$build/cli/kfleet" --version
echo
echo "== Durable task-state transitions in the SQLite store (kfleet bench store) =="
"$build/cli/kfleet" bench store --tasks "${KFLEET_DEMO_TASKS:-2000}"
