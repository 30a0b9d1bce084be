#!/usr/bin/env bash
# Build ringio and run the whole test suite (every test on every backend
# this machine has). On a fresh Debian/Ubuntu machine, run as root, it
# installs what it needs first. `--sanitize` builds and runs under
# ASan+UBSan in a separate build directory; `--tsan` builds with
# ThreadSanitizer and runs the tests labelled "threads" (test/threads.c:
# Criterion itself does not start under TSan).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build-test sanitize=OFF tsan=OFF label=()
case "${1:-}" in
  --sanitize) dir=build-asan sanitize=ON ;;
  --tsan) dir=build-tsan tsan=ON label=(-L threads) ;;
  "") ;;
  *) echo "usage: test/run.sh [--sanitize | --tsan]" >&2; exit 2 ;;
esac

pkgs=(gcc make cmake pkg-config liburing-dev libcriterion-dev groff-base man-db
      procps redis-server redis-tools nftables iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test/run.sh: missing packages: ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

cmake -S . -B "$dir" -DRINGIO_SANITIZE="$sanitize" -DRINGIO_TSAN="$tsan" \
      -DRINGIO_FAULT_HOOKS=ON -DRINGIO_BUILD_BENCH=OFF
cmake --build "$dir" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
ctest --test-dir "$dir" --output-on-failure --timeout 900 "${label[@]}"
