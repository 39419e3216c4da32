#!/usr/bin/env bash
# Runs kfleet's GPU tests on a GPU machine, from the repository root, with the bundle of
# scripts/device-bundle.sh unpacked at ${KFLEET_BUNDLE:-bundle}.
#   Here:  scripts/device-bundle.sh          (builds build-device/ with CUDA, fills bundle/)
#          tar -cJf bundle.tar.xz bundle     (bundle/ is git-ignored: carry it, or this tarball)
#   There: tar -xJf bundle.tar.xz && scripts/device-test.sh
# Runs bundle/bin/cuda_test whole, the CUDA / GPU tests of eval_test, worker_test and
# integration_test, and agents_test's CUDA templates. Full logs go to
# ${OUT:-/tmp}/device-test/<binary>.log; this prints each binary's summary, every skipped test
# with its reason and every failed one, then a table.
# Exits 1 when a test fails, a binary is missing, crashes, times out (KFLEET_TEST_TIMEOUT_S,
# default 300) or runs no test.
# The CUDA libraries come from the machine (the bundle leaves them out); KFLEET_CUDA_HOME points
# the CUDA toolchain tests at an nvcc outside PATH and /usr/local/cuda.
set -uo pipefail
bundle=$(realpath -m "${KFLEET_BUNDLE:-bundle}")
logs=${OUT:-/tmp}/device-test
timeout_s=${KFLEET_TEST_TIMEOUT_S:-300}
gpu_filter='*Cuda*:*Gpu*:*GPU*'

if ! gpus=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader \
  2>&1); then
  echo "device-test: nvidia-smi does not work: $gpus" >&2
  exit 1
fi
while read -r line; do echo "gpu: $line"; done <<<"$gpus"
if [[ ! -d $bundle/bin ]]; then
  echo "device-test: no bundle at $bundle (build one with scripts/device-bundle.sh)" >&2
  exit 1
fi

mkdir -p "$logs"
export KFLEET_BIN_DIR=$bundle/bin
export KFLEET_TEST_DATA=$PWD/tests/data
export KFLEET_CACHE_DIR=$logs/cache

# Prints "RUN PASSED SKIPPED FAILED" from the per-test result lines of a gtest log (they end in
# "(N ms)"; the closing lists repeat the names without it), then one line per skip and failure.
summarize() {
  awk '
    /: Skipped$/ { skip_next = 1; next }
    skip_next { reason = $0; skip_next = 0; next }
    /^\[       OK \] .* \([0-9]+ ms\)$/ { ok++ }
    /^\[  SKIPPED \] .* \([0-9]+ ms\)$/ {
      skipped++; details = details sprintf("  skipped %s: %s\n", $4, reason); reason = ""
    }
    /^\[  FAILED  \] .* \([0-9]+ ms\)$/ { failed++; details = details sprintf("  FAILED  %s\n", $4) }
    END { printf "%d %d %d %d\n%s", ok + skipped + failed, ok, skipped, failed, details }
  ' "$1"
}

declare -a rows
status=0
run_binary() {  # name [gtest args...]
  local name=$1
  shift
  local binary=$bundle/bin/$name log=$logs/$name.log
  if [[ ! -x $binary ]]; then
    echo "$name: missing from $bundle/bin"
    rows+=("$name - - - - missing")
    status=1
    return
  fi
  local missing_libs
  missing_libs=$(ldd "$binary" 2>/dev/null | grep "not found")
  if [[ -n $missing_libs ]]; then
    echo "$name: libraries not found:"
    echo "$missing_libs"
    rows+=("$name - - - - libraries-missing")
    status=1
    return
  fi
  timeout -k 10 "$timeout_s" "$binary" "$@" >"$log" 2>&1
  local rc=$?
  local counts details run passed skipped failed
  counts=$(summarize "$log" | head -n 1)
  details=$(summarize "$log" | tail -n +2)
  read -r run passed skipped failed <<<"$counts"
  local outcome=ok
  if ((rc == 124 || rc == 137)); then
    outcome="timed-out(${timeout_s}s)"
  elif ((rc != 0 && failed == 0)); then
    outcome="crashed(rc=$rc)"
  elif ((failed > 0)); then
    outcome=failed
  elif ((run == 0)); then
    outcome=no-tests
  fi
  [[ $outcome == ok ]] || status=1
  grep -E '^\[==========\] .* ran\.|^\[  (PASSED|SKIPPED|FAILED)  ?\] [0-9]+ tests?' "$log" |
    sed "s/^/$name: /"
  [[ -n $details ]] && echo "$details"
  [[ $outcome == ok ]] || echo "$name: $outcome (log: $log)"
  rows+=("$name $run $passed $skipped $failed $outcome")
}

run_binary cuda_test
run_binary eval_test --gtest_filter="$gpu_filter"
run_binary worker_test --gtest_filter="$gpu_filter"
run_binary integration_test --gtest_filter="$gpu_filter"
run_binary agents_test --gtest_filter="Cuda*"

echo
for row in "binary run passed skipped failed outcome" "${rows[@]}"; do
  read -ra fields <<<"$row"
  printf '%-12s %5s %7s %8s %7s  %s\n' "${fields[@]}"
done
echo "logs: $logs"
exit "$status"
