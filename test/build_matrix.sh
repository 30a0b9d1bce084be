#!/usr/bin/env bash
# Compile (no test run) every kind of configuration with -Werror, so that no
# configuration rots unseen: the default one a newcomer builds included.
#
#   test/build_matrix.sh [--dir DIR] [--full]
#
# Factors: compiler (gcc, clang) x build type (Release, Debug) x tests
# (on, off) x fault hooks (on, off) x benchmarks (on, off). By default each
# compiler builds a pairwise-covering set (every value of every factor, and
# every pair of values of any two factors, appears in some build: 6 builds a
# compiler), plus the default configuration (`cmake -S . -B build`, what the
# README's first command builds); `--full` builds all 16 per compiler.
# Each build starts from an empty directory. Exit 1 names every
# configuration that failed; the log of each is kept under DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-matrix full=0
while [ $# -gt 0 ]; do
	case $1 in
	--dir) dir=$2; shift ;;
	--full) full=1 ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "build_matrix.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
	shift
done

compilers=()
for c in gcc clang; do
	if command -v "$c" >/dev/null; then
		compilers+=("$c")
	else
		echo "build_matrix.sh: $c is not installed (Debian: apt-get install $c)" >&2
		exit 1
	fi
done

# type tests faults bench
if [ "$full" = 1 ]; then
	configs=()
	for t in Release Debug; do for a in ON OFF; do for f in ON OFF; do for b in ON OFF; do
		configs+=("$t $a $f $b")
	done; done; done; done
else
	configs=(
		"default"
		"Debug ON OFF ON"
		"Debug OFF ON OFF"
		"Release ON ON OFF"
		"Release OFF OFF ON"
		"Release ON OFF OFF"
		"Debug ON ON ON"
	)
fi

mkdir -p "$dir"
failed=() n=0 t0=$SECONDS
for cc in "${compilers[@]}"; do
	for cfg in "${configs[@]}"; do
		n=$((n + 1))
		if [ "$cfg" = default ]; then
			name="$cc-default" args=()
		else
			read -r t a f b <<<"$cfg"
			name="$cc-$t-tests$a-faults$f-bench$b"
			args=(-DCMAKE_BUILD_TYPE="$t" -DRINGIO_BUILD_TESTS="$a"
			      -DRINGIO_FAULT_HOOKS="$f" -DRINGIO_BUILD_BENCH="$b")
		fi
		b="$dir/$name"
		rm -rf "$b"
		s=$SECONDS
		if CC=$cc cmake -S . -B "$b" "${args[@]}" >"$b.log" 2>&1 &&
		   cmake --build "$b" -j"$(nproc)" >>"$b.log" 2>&1; then
			echo "ok    $name ($((SECONDS - s)) s)"
			rm -rf "$b"
		else
			echo "FAIL  $name: log in $b.log"
			grep -E 'error|warning' "$b.log" | head -20 | sed 's/^/      /'
			failed+=("$name")
		fi
	done
done
echo "build matrix: $((n - ${#failed[@]})) of $n configurations built with -Werror in $((SECONDS - t0)) s"
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}" >&2
	exit 1
fi
