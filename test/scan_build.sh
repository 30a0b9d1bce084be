#!/usr/bin/env bash
# Clang's static analyzer (scan-build, Debian's clang-tools) over the
# library (src/, fallback/) and the tools (tools/), in two configurations:
# fault hooks on and off (src/uring.c, fallback/reactor.c and src/fault.h
# compile different code for each). Exit 1 on any report, naming the
# directory that holds the HTML reports.
#
#   test/scan_build.sh [--dir DIR]      (build dirs DIR-hooks, DIR-nohooks;
#                                        default build-scan)
#
# What it leaves out, and why:
#  - test/ and bench/ (RINGIO_BUILD_TESTS=OFF, RINGIO_BUILD_BENCH=OFF): the
#    brief is the shipped code; the tests are checked at run time instead
#    (ASan, TSan, valgrind).
#  - fallback/kqueue.c where kqueue is not found (Debian does not package
#    libkqueue): CMake does not compile it, so it is not analyzed. The
#    script prints which fallback sources were analyzed.
# Debug builds, on purpose: the analyzer reads assert() as the invariant it
# states and prunes paths that contradict it (clang's own advice: analyze
# the configuration with assertions on). Under -DNDEBUG the invariants the
# code asserts are invisible to it, and it reports the paths they exclude.
# No checker is disabled.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-scan
while [ $# -gt 0 ]; do
	case $1 in
	--dir) dir=$2; shift ;;
	-h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "scan_build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
	shift
done

sb=
for c in scan-build scan-build-14; do
	if command -v "$c" >/dev/null; then sb=$c; break; fi
done
if [ -z "$sb" ]; then
	echo "scan_build.sh: scan-build is not installed (Debian: apt-get install clang-tools)" >&2
	exit 1
fi

t0=$SECONDS
reports=$(mktemp -d "${TMPDIR:-/tmp}/ringio-scan.XXXXXX")
failed=()
for hooks in ON OFF; do
	d=$dir-$([ $hooks = ON ] && echo hooks || echo nohooks)
	rm -rf "$d" && mkdir -p "$d"
	echo "== scan-build: fault hooks $hooks ($d)"
	"$sb" -o "$reports" cmake -S . -B "$d" -DCMAKE_BUILD_TYPE=Debug \
		-DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
		-DRINGIO_BUILD_TESTS=OFF -DRINGIO_BUILD_BENCH=OFF \
		-DRINGIO_BUILD_TOOLS=ON -DRINGIO_FAULT_HOOKS=$hooks >"$d/scan-cmake.log" 2>&1 ||
		{ cat "$d/scan-cmake.log"; echo "scan_build.sh: cmake failed" >&2; exit 1; }
	# --status-bugs: the build exits 1 when the analyzer reported anything
	# (or when the build itself fails, -Werror included).
	rc=0
	"$sb" --status-bugs -o "$reports" cmake --build "$d" -j"$(nproc)" >"$d/scan.log" 2>&1 || rc=$?
	grep -E 'warning:|error:|scan-build:' "$d/scan.log" || true
	[ "$rc" -eq 0 ] || failed+=("hooks-$hooks")
	echo "   analyzed: $(sed -n 's|.*"file": *"'"$PWD"'/\(.*\)".*|\1|p' "$d/compile_commands.json" |
		grep -v "^$d/" | sort | tr '\n' ' ')"
done
echo "== scan_build.sh: $((SECONDS - t0)) s"
if ((${#failed[@]})); then
	echo "scan_build.sh: the analyzer reported bugs (${failed[*]}); reports under $reports" >&2
	exit 1
fi
rmdir "$reports" 2>/dev/null || true
echo "scan_build.sh: no reports on src/, fallback/, tools/"
