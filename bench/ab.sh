#!/usr/bin/env bash
# bench/ab.sh — is a change slower? Two builds of ringio, side by side.
#
#   bench/ab.sh --before DIR|REV [--after DIR|REV] [--rounds R] [--seconds S]
#               [--quiet-wait S] [--out DIR] [--jobs N] [--keep] [--quick]
#               [--only echo|proxy]
#
# The ringio rows of bench/matrix.sh's headline run: ringio-echo on io_uring
# (ringio) and on epoll (ringio-epoll) at 50 and 500 connections x 64 B and
# 64 KiB, and ringio-proxy on io_uring and on epoll in front of the epoll
# echo server, 50 connections x 64 B. Each row runs the BEFORE and the AFTER
# build's server in the same bench/run.sh call, one right after the other:
# before first in odd rounds, after first in even ones. The load generator
# and the echo server behind the proxies (they do not link libringio) are
# the AFTER build's, for both.
#
# --before, --after  a build directory (relative to the repository root),
#           or a git revision: that one is exported (git archive) to a
#           temporary directory and built there (tools, and bench for the
#           after; -j N, default 2) with the build type and RINGIO_* options
#           of the side given as a directory. --after defaults to build.
#           Each side's tools must load their own libringio.so: checked
#           with ldd first, under this environment (LD_LIBRARY_PATH beats
#           a build tree's RUNPATH).
# --only    echo or proxy: only those rows (default: both)
# --keep    keep the temporary builds (their path is printed; pass one as
#           --before DIR next time to skip the build)
# --out     where run.sh's log and raw figures and the table go (default
#           build/bench-results)
# --quiet-wait S  passed to run.sh: before each run, wait up to S s
#           (default 10) for idle CPUs
#
# 5 rounds of 1.5 s (0.5 s warmup) by default: 100 runs, about 6 minutes
# on 2 idle vCPUs; --quick: 1 round of 1 s, no idle wait (a smoke test).
# It prints, per row, the median over rounds of the per-round after/before
# ratios of rtt/s (higher is better) and of cpu_us/rt (lower is better),
# with their min..max, the number of runs that started on a busy machine,
# then "worst ratio X on row Y": the lowest rtt/s median.
# Exit 0 when everything ran, 1 if a build or a run failed, 2 on bad usage.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
before="" after=build rounds=5 secs=1.5 quiet=() quick=() out="" jobs=2 keep=0
only=
usage() { sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; }
bad() { echo "ab.sh: $* (try --help)" >&2; exit 2; }
need() { [ $# -ge 2 ] || bad "$1 needs a value"; }
while [ $# -gt 0 ]; do
	case $1 in
	--before) need "$@"; before=$2; shift ;;
	--after) need "$@"; after=$2; shift ;;
	--rounds) need "$@"; rounds=$2; shift ;;
	--seconds) need "$@"; secs=$2; shift ;;
	--quiet-wait) need "$@"; quiet=(--quiet-wait "$2"); shift ;;
	--out) need "$@"; out=$2; shift ;;
	--jobs) need "$@"; jobs=$2; shift ;;
	--keep) keep=1 ;;
	--quick) quick=(--quick) ;;
	--only) need "$@"; only=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) bad "unknown argument '$1'" ;;
	esac
	shift
done
[ -n "$before" ] || bad "--before DIR|REV is required"
[ ${#quick[@]} -eq 0 ] || rounds=1 secs=1
[[ $rounds =~ ^[1-9][0-9]*$ ]] || bad "bad --rounds '$rounds'"
[[ $secs =~ ^[0-9]+([.][0-9]+)?$ ]] || bad "bad --seconds '$secs'"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || bad "bad --jobs '$jobs'"

# A side is a directory if there is one, else a revision to build.
kind() {
	if [ -d "$1" ]; then
		echo dir
	elif git rev-parse -q --verify "$1^{commit}" >/dev/null; then
		echo rev
	else
		bad "$2 '$1' is neither a build directory nor a git revision"
	fi
}
bkind=$(kind "$before" --before)
akind=$(kind "$after" --after)

tmp=$(mktemp -d /tmp/ringio-ab.XXXXXX)
cleanup() {
	if [ "$keep" = 1 ]; then
		echo "ab.sh: kept $tmp; a build there can be passed as --before DIR next time" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'echo "ab.sh: interrupted" >&2; exit 130' INT TERM

# The -D options a revision is configured with: those of the side given as
# a directory, so that both sides are built alike.
cache=""
for d in "$after" "$before"; do
	[ -f "$d/CMakeCache.txt" ] && { cache=$d/CMakeCache.txt; break; }
done
config=(-DRINGIO_BUILD_TESTS=OFF -DRINGIO_BUILD_BENCH=ON -DRINGIO_BUILD_TOOLS=ON)
if [ -n "$cache" ]; then
	while IFS= read -r line; do
		config+=("-D${line%%:*}=${line#*=}")
	done < <(grep -E '^(CMAKE_BUILD_TYPE|CMAKE_C_FLAGS|RINGIO_(FAULT_HOOKS|SANITIZE|TSAN)):' "$cache")
fi

# build_rev REV SIDE TARGET...: export REV and build the targets; prints the
# build directory.
build_rev() {
	local src=$tmp/$2-src dir=$tmp/$2-build log=$tmp/$2-build.log
	mkdir -p "$src"
	echo "ab.sh: building $2 = $1 ($(git rev-parse --short "$1")) in $dir" >&2
	git archive --format=tar "$1" | tar -x -C "$src"
	if ! { cmake -S "$src" -B "$dir" "${config[@]}" &&
		cmake --build "$dir" -j "$jobs" --target "${@:3}"; } >"$log" 2>&1; then
		echo "ab.sh: building $2 ($1) failed; the end of its log:" >&2
		tail -n 20 "$log" | sed 's/^/    /' >&2
		exit 1
	fi
	echo "$dir"
}
bdir=$before adir=$after
[ "$bkind" = dir ] || bdir=$(build_rev "$before" before ringio-echo ringio-proxy)
[ "$akind" = dir ] || adir=$(build_rev "$after" after ringio-echo ringio-proxy \
	rio-loadgen rio-epoll-echo)
bdir=$(cd "$bdir" && pwd -P) adir=$(cd "$adir" && pwd -P)

# Both builds have the tools, each loading its own libringio.so.
for side in before:$bdir after:$adir; do
	dir=${side#*:}
	for t in ringio-echo ringio-proxy; do
		[ -x "$dir/tools/$t" ] || { echo "ab.sh: ${side%%:*}: $dir/tools/$t not built" >&2; exit 1; }
		lib=$(ldd "$dir/tools/$t" 2>/dev/null |
			awk '$1 ~ /^libringio\.so/ { print $3 == "not" ? "(not found)" : $3 }' || true)
		[ -z "$lib" ] && continue # linked statically
		case $(realpath -q "$lib" || echo "$lib") in
		"$dir"/*) ;;
		*) echo "ab.sh: ${side%%:*}: $dir/tools/$t loads '$lib', not its own build's libringio.so (LD_LIBRARY_PATH=${LD_LIBRARY_PATH-})" >&2
			exit 1 ;;
		esac
	done
done
[ -x "$adir/bench/rio-loadgen" ] || { echo "ab.sh: $adir/bench/rio-loadgen not built" >&2; exit 1; }
types=$(for d in "$bdir" "$adir"; do
	grep -E '^CMAKE_BUILD_TYPE:' "$d/CMakeCache.txt" 2>/dev/null || echo "?"
done | sort -u | wc -l)
[ "$types" = 1 ] || echo "ab.sh: warning: the two builds have different build types" >&2

# run.sh's build directory: bench/ is the AFTER build's (the load generator
# and the proxies' echo server), SIDE/tools each side's, and SIDE/proxy runs
# proxy_pair.sh with that side's tools.
view=$tmp/view
mkdir -p "$view/before" "$view/after"
ln -s "$adir/bench" "$view/bench"
for side in before:$bdir after:$adir; do
	s=${side%%:*}
	ln -s "${side#*:}/tools" "$view/$s/tools"
	ln -s "$adir/bench" "$view/$s/bench"
	printf '#!/bin/sh\nRIO_BENCH_BDIR=%s exec %s "$@"\n' "$view/$s" \
		"$ROOT/bench/proxy_pair.sh" >"$view/$s/proxy"
	chmod +x "$view/$s/proxy"
done

# A row's server, NAME run as NAME.before and NAME.after: its command line
# on side $2, relative to the view.
side_cmd() {
	case $1 in
	ringio) echo "$2/tools/ringio-echo --backend uring --threads 1" ;;
	ringio-epoll) echo "$2/tools/ringio-echo --backend epoll --threads 1" ;;
	ringio-proxy | ringio-proxy-epoll) echo "$2/proxy $1" ;;
	esac
}
# sections: servers | conns | sizes
sections=("ringio ringio-epoll|50 500|64 65536" "ringio-proxy ringio-proxy-epoll|50|64")
case $only in
echo) sections=("${sections[0]}") ;;
proxy) sections=("${sections[1]}") ;;
"") ;;
*) bad "--only takes echo or proxy, not '$only'" ;;
esac

: "${out:=$ROOT/build/bench-results}"
mkdir -p "$out"
stamp=$(date +%Y%m%d-%H%M%S)
log=$out/ab-$stamp.log raw=$out/ab-$stamp.raw
: >"$raw"
# The rows, "NAME CONNS SIZE;" each, and the runs in the whole job.
runs() { echo $((2 * $(wc -w <<<"$1") * $(wc -w <<<"$2") * $(wc -w <<<"$3") * rounds)); }
rows="" total=0
for s in "${sections[@]}"; do
	IFS='|' read -r srv conns sizes <<<"$s"
	for n in $srv; do for c in $conns; do for z in $sizes; do
		rows="$rows$n $c $z;"
	done; done; done
	total=$((total + $(runs "$srv" "$conns" "$sizes")))
done
echo "ab.sh: before $before ($bdir), after $after ($adir); $rounds round(s); log $log" >&2

rc=0 done=0 t0=$SECONDS
for s in "${sections[@]}"; do
	IFS='|' read -r srv conns sizes <<<"$s"
	list="" adds=()
	for n in $srv; do
		list="$list $n.before $n.after"
		adds+=(--add-server "$n.before=$(side_cmd "$n" before)"
			--add-server "$n.after=$(side_cmd "$n" after)")
	done
	bench/run.sh --build-dir "$view" --rounds "$rounds" --seconds "$secs" \
		--warmup 0.5 --conns "$conns" --sizes "$sizes" --servers "${list# }" \
		"${adds[@]}" --baseline "${srv%% *}.before" --progress "$done/$total" \
		--raw "$tmp/raw" "${quiet[@]}" "${quick[@]}" >>"$log" || rc=1
	cat "$tmp/raw" >>"$raw"
	done=$((done + $(runs "$srv" "$conns" "$sizes")))
done

# The table. A raw line (run.sh's run_one): conns size round server rtt p50
# p99 cpu_rt core_rt errors lg_pct rc noisy shared. Per row and round with
# both sides clean: the ratios and the before's figures, as "NAME CONNS
# SIZE METRIC VALUE"; sorted, so that each (row, metric) is a run of
# ascending values: its median, min and max.
awk '$6 != "-" && $10 == 0 && $12 == 0 {
		name = $4; sub(/\.[a-z]+$/, "", name); side = substr($4, length(name) + 2)
		k = name " " $1 " " $2 SUBSEP $3
		R[k, side] = $5; C[k, side] = $8; seen[k] = 1
	}
	END {
		for (k in seen) {
			if (!((k, "before") in R) || !((k, "after") in R)) continue
			split(k, p, SUBSEP); row = p[1]
			print row, "n", 1
			print row, "rtt", R[k, "before"]
			if (R[k, "before"] > 0) print row, "x_rtt", R[k, "after"] / R[k, "before"]
			if (C[k, "before"] ~ /^[0-9.]+$/ && C[k, "after"] ~ /^[0-9.]+$/ && C[k, "before"] > 0) {
				print row, "cpu", C[k, "before"]
				print row, "x_cpu", C[k, "after"] / C[k, "before"]
			}
		}
	}' "$raw" | sort -k1,3 -k4,4 -k5,5g | awk -v rows="$rows" -v rounds="$rounds" \
	-v noisy="$(awk '$13 == 1' "$raw" | wc -l)" \
	-v head="before $before, after $after: $rounds round(s) of $secs s, the runs took $(( (SECONDS - t0) / 60 ))m$(( (SECONDS - t0) % 60 ))s" '
	function flush() {
		if (key == "") return
		N[key] = n; MIN[key] = v[1]; MAX[key] = v[n]
		MED[key] = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
	}
	{
		k = $1 " " $2 " " $3 SUBSEP $4
		if (k != key) { flush(); key = k; n = 0 }
		v[++n] = $5
	}
	function fmt(k, f) { return (k in MED) ? sprintf(f, MED[k]) : "-" }
	function range(k) { return (k in MED) ? sprintf("%.3f..%.3f", MIN[k], MAX[k]) : "-" }
	END {
		flush()
		print "# " head
		print "# rtt/s, cpu_us/rt: medians of the before runs; x_: after/before per round, median and min..max"
		print "# (x_rtt higher is better, x_cpu lower)"
		printf "%-19s %5s %6s %6s %10s %6s %13s %9s %6s %13s\n", "row", "conns", "size",
			"rounds", "rtt/s", "x_rtt", "x_rtt range", "cpu_us/rt", "x_cpu", "x_cpu range"
		nr = split(rows, row, ";")
		worst = ""; wcpu = ""
		for (i = 1; i < nr; i++) {
			split(row[i], p, " ")
			printf "%-19s %5s %6s %3d/%-2d %10s %6s %13s %9s %6s %13s\n", p[1], p[2], p[3],
				N[row[i] SUBSEP "n"], rounds, fmt(row[i] SUBSEP "rtt", "%.0f"),
				fmt(row[i] SUBSEP "x_rtt", "%.3f"), range(row[i] SUBSEP "x_rtt"),
				fmt(row[i] SUBSEP "cpu", "%.2f"), fmt(row[i] SUBSEP "x_cpu", "%.3f"),
				range(row[i] SUBSEP "x_cpu")
			k = row[i] SUBSEP "x_rtt"
			if ((k in MED) && (worst == "" || MED[k] < MED[worst])) worst = k
			k = row[i] SUBSEP "x_cpu"
			if ((k in MED) && (wcpu == "" || MED[k] > MED[wcpu])) wcpu = k
		}
		if (noisy > 0)
			printf "note: %d run(s) started while a CPU was busy with other work\n", noisy
		if (wcpu != "") {
			split(wcpu, p, SUBSEP)
			printf "worst cpu_us/rt ratio %.3f on row %s (after/before: lower is better)\n", MED[wcpu], p[1]
		}
		if (worst == "") { print "worst ratio - on row - (no row ran clean on both sides)"; exit }
		split(worst, p, SUBSEP)
		printf "worst ratio %.3f on row %s\n", MED[worst], p[1]
	}' | tee "$out/ab-$stamp.txt"
[ "$rc" = 0 ] || echo "ab.sh: a run failed; see $log and the messages above" >&2
exit "$rc"
