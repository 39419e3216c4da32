#!/usr/bin/env bash
# Installs dependencies, builds, plans the bundled GPT-2 small export (kernel jobs ranked by
# Amdahl impact on an H200 and on this CPU), then searches faster CPU kernels for it with
# `kfleet run` (baseline measured, island search live, winners verified in the whole model, report
# written; KFLEET_DEMO_BUDGET, default 6m, is the search time), and finally runs a kfleet fleet on
# this machine: a coordinator, two workers joined with CurveZMQ keys, a diagnostic job with
# injected failures, and a coordinator killed with SIGKILL mid-job and restarted. Everything lives
# in a temporary directory, removed at the end unless KFLEET_DEMO_KEEP=1 (the search report is
# copied to ./kfleet-demo-report).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KFLEET_BUILD_DIR:-$root/build}

bash "$root/scripts/setup.sh"
echo "building (first time: a few minutes)..."
bash "$root/scripts/build.sh" >/dev/null

demo=$(mktemp -d "${TMPDIR:-/tmp}/kfleet-demo-XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KFLEET_DEMO_KEEP:-}" ]; then echo "logs and state kept in $demo"; else rm -rf "$demo"; fi
}
trap cleanup EXIT
export HOME="$demo/home" KFLEET_CLI_CONFIG="$demo/state/cli.yaml"
mkdir -p "$HOME"
kfleet="$build/cli/kfleet"
step() { printf '\n== %s\n' "$*"; }

start_coordinator() {  # [listen api]
  "$build/coordinator/kfleetd" --state "$demo/state" --listen "${1:-tcp://127.0.0.1:0}" \
    --api "${2:-tcp://127.0.0.1:0}" >>"$demo/kfleetd.log" 2>&1 &
  coordinator=$!
  pids+=("$coordinator")
  local serving=""
  for _ in $(seq 100); do
    serving=$(grep "serving workers on" "$demo/kfleetd.log" | tail -n 1 || true)
    [ -n "$serving" ] && [ "$(grep -c "serving workers on" "$demo/kfleetd.log")" -ge "${3:-1}" ] && break
    sleep 0.1
  done
  echo "$serving"
  workers_at=$(sed -E 's/.*serving workers on ([^ ]+) and clients on ([^ ]+) .*/\1/' <<<"$serving")
  clients_at=$(sed -E 's/.*serving workers on ([^ ]+) and clients on ([^ ]+) .*/\2/' <<<"$serving")
}

model="$root/tests/data/models/gpt2-small_b1s128.onnx"
step "kfleet plan: GPT-2 small (batch 1, 128 tokens) on an H200 in fp16, no daemon needed"
"$kfleet" plan "$model" --target h200 --dtype fp16 --top 8
step "kfleet run: search faster CPU kernels for GPT-2 small here (budget ${KFLEET_DEMO_BUDGET:-6m})"
echo "(a coordinator in the kfleet process, one local worker; the view below refreshes live)"
report="$PWD/kfleet-demo-report"
rm -rf "$report"
"$kfleet" run "$model" --budget "${KFLEET_DEMO_BUDGET:-6m}" --top 5 --out "$report" \
  --state "$demo/run"
step "the report: $report/report.md (also speedup.svg, progress.svg, kernels/, lib/, include/)"
sed -n '/^## Summary/,/^## Plots/p' "$report/report.md" | grep -v "^## Plots"

step "kfleet $("$kfleet" --version | cut -d' ' -f2): start the coordinator (kfleetd) with its state in $demo/state"
start_coordinator

for node in node-a node-b; do
  step "kfleet nodes invite $node"
  invite=$("$kfleet" nodes invite "$node" --json)
  command=$(sed -E 's/.*"command": *"([^"]+)".*/\1/' <<<"$(tr -d '\n' <<<"$invite")")
  echo "the node joins with: $command"
  # The same command, with this build's binary and a private work directory.
  ${command/kfleet-worker/$build/worker/kfleet-worker} --cpu-slots 2 \
    --work-dir "$demo/work/$node" >>"$demo/$node.log" 2>&1 &
  pids+=($!)
done
sleep 1
step "kfleet nodes"
"$kfleet" nodes

step "kfleet diag echo: 200 tasks, 5% of attempts fail and 2% crash their process (retried)"
"$kfleet" diag echo --tasks 200 --delay-ms 20 --fail-rate 0.05 --crash-rate 0.02 --seed 1

step "a 40-task job, and kfleetd killed with SIGKILL while it runs"
job=$("$kfleet" diag echo --tasks 40 --delay-ms 300 --no-wait --json | sed -E 's/.*"job":([0-9]+).*/\1/')
sleep 1.5
{ kill -9 "$coordinator" && wait "$coordinator"; } 2>/dev/null || true
echo "killed kfleetd (pid $coordinator) with job $job half done; restarting it on the same endpoints"
start_coordinator "$workers_at" "$clients_at" 2
"$kfleet" watch "$job" | tail -n 1

step "kfleet status"
"$kfleet" status
step "kfleet show $job"
"$kfleet" show "$job"
echo
echo "Every task ran to completion exactly once across the restart."
echo "(KFLEET_DEMO_KEEP=1 keeps the demo's state and logs instead of removing them.)"
