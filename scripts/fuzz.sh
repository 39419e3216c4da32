#!/usr/bin/env bash
# Fuzzes the frame decoder (messages/fuzz/frame_fuzz.cc) with libFuzzer, ASan and UBSan.
# Usage: scripts/fuzz.sh [SECONDS]     (default 60; installs clang and libFuzzer when missing)
# The corpus stays in build-fuzz/frame-corpus between runs; crashes land in build-fuzz/crashes/.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
build="$root/build-fuzz"

bash "$root/scripts/setup.sh" --fuzz

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKFLEET_FUZZ=ON
ninja -C "$build" -j"$(nproc)" frame_fuzz messages_test

# Seeds: one valid frame pair per message type, written by the unit tests (under ASan too).
mkdir -p "$build/frame-corpus" "$build/crashes"
KFLEET_FUZZ_SEEDS_DIR="$build/frame-corpus" \
  "$build/tests/unit/messages/messages_test" --gtest_filter='FuzzSeeds.*'

"$build/messages/frame_fuzz" -max_total_time="$seconds" -max_len=65536 \
  -artifact_prefix="$build/crashes/" "$build/frame-corpus"
