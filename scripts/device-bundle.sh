#!/usr/bin/env bash
# Builds kfleet with CUDA on and gathers the programs, the test binaries and every non-system
# shared library they load into one folder (default bundle/: bin/ and lib/, RPATH $ORIGIN/../lib,
# which unlike RUNPATH also covers the libraries' own dependencies),
# so they run on a GPU machine that has none of our Debian packages.
#   scripts/device-bundle.sh [OUT_DIR]
# On that machine: KFLEET_BIN_DIR=bundle/bin bundle/bin/worker_test (tests find programs there),
# or scripts/device-test.sh for the GPU tests.
# KFLEET_DEVICE_BUILD_DIR / KFLEET_DEVICE_BUILD_TYPE reuse another build tree (an existing
# RelWithDebInfo tree then only relinks); KFLEET_CUDA_ARCHITECTURES overrides the GPU targets.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bundle}
build=${KFLEET_DEVICE_BUILD_DIR:-$root/build-device}

bash "$root/scripts/setup.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${KFLEET_DEVICE_BUILD_TYPE:-Release}" \
  -DKFLEET_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${KFLEET_CUDA_ARCHITECTURES:-80-virtual;90a-real}" \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib' \
  -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags >/dev/null
cmake --build "$build" -j "${KFLEET_JOBS:-$(nproc)}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
programs=(coordinator/kfleetd worker/kfleet-worker worker/kfleet-probe cli/kfleet eval/kfleet-harness
  tests/unit/eval/sandbox_probe)
tests=$(cd "$build" && find tests -type f -name '*_test' -perm -u+x)
for file in "${programs[@]}" $tests; do
  cp "$build/$file" "$out/bin/"
  strip --strip-debug "$out/bin/$(basename "$file")"
done

# Every library the programs load except the C and C++ runtimes, which the target's (newer)
# system provides and which must not be mixed with copies, and the CUDA driver and toolkit
# libraries: the GPU machine has its own CUDA 13 in its default library path (they would not fit
# in the bundle's 64 MiB either).
system_libs='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s'
system_libs+='|libcuda|libcudart|libcublas|libcublasLt|libcudnn.*|libnvrtc.*|libnvJitLink)\.so'
for binary in "$out"/bin/*; do
  ldd "$binary" | awk '/=> \// { print $1, $3 }'
done | sort -u | while read -r name path; do
  if ! grep -Eq "$system_libs" <<<"$name"; then cp -L "$path" "$out/lib/$name"; fi
done
du -sh "$out" | awk '{ print "bundle: " $1 " in '"$out"'" }'
ls "$out/bin"
