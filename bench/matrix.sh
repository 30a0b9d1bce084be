#!/usr/bin/env bash
# bench/matrix.sh — the benchmarks in one command.
#
#   bench/matrix.sh [--build-dir DIR] [--rounds R] [--seconds S] [--out DIR]
#                   [--full] [--quick]
#
# By default the headline rows, a few minutes on 2 vCPUs: echo servers at
# 50 and 500 connections x 64 B and 64 KiB (the hand-written epoll server,
# the raw liburing server and ringio-echo on io_uring; x_ against epoll),
# the proxy row 50 connections x 64 B (haproxy and ringio-proxy, each
# in front of the epoll echo server; x_ against haproxy), and the datagram
# row 50 sockets x 64 B (a hand-written recvmmsg/sendmmsg epoll server,
# ringio-echo --udp on io_uring and on epoll; x_ against the hand-written
# one). 5 rounds of 1.5 s that alternate the servers' order.
#
# --full: the whole matrix (about 35 minutes): echo rows 1, 50 and 500
# connections x 64 B, 4 KiB and 64 KiB for epoll, raw liburing, libuv's
# echo, ringio-echo on io_uring and on epoll (--splice auto: a connection
# that fills a whole buffer moves on to a pipe) and ringio-copy (io_uring,
# --splice off); proxy rows for haproxy (mode tcp, nbthread 1;
# haproxy-splice forces splicing both ways), ringio-proxy on io_uring and
# on epoll (--splice auto), and ringio-proxy-copy / ringio-proxy-splice
# (--splice off / on: what auto chooses between); multi-core rows:
# ringio-echo with 1, 2, 4, ... threads (up to half the CPUs, so the
# generator gets the other half; below 4 CPUs up to all of them, the
# generator then sharing, which the table flags) at 500 connections, x_
# against one thread; datagram rows at 1, 50 and 500 sockets x 64 B and
# 1400 B. 3 rounds of 3 s.
#
# While it runs, stderr shows each run (row, round, runs left, time left).
# At the end it prints the tables and writes a plot of the x_ ratios
# (PNG, with gnuplot) into --out (default DIR/bench-results) and prints
# its path. Every row is a median over rounds (bench/run.sh). Exit 1 if a
# run failed or echoed wrong bytes, 2 on bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build rounds="" secs="" warm="" quick=() full=0 out=""
usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; }
bad() { echo "matrix.sh: $* (try --help)" >&2; exit 2; }
need() { [ $# -ge 2 ] || bad "$1 needs a value"; }
while [ $# -gt 0 ]; do
	case $1 in
	--build-dir) need "$@"; build=$2; shift ;;
	--rounds) need "$@"; rounds=$2; shift ;;
	--seconds) need "$@"; secs=$2; shift ;;
	--out) need "$@"; out=$2; shift ;;
	--full) full=1 ;;
	--quick) quick=(--quick) ;;
	-h | --help) usage; exit 0 ;;
	*) bad "unknown argument '$1'" ;;
	esac
	shift
done
if [ "$full" = 1 ]; then
	: "${rounds:=3}" "${secs:=3}" "${warm:=1}"
else
	: "${rounds:=5}" "${secs:=1.5}" "${warm:=0.5}"
fi
[[ $rounds =~ ^[1-9][0-9]*$ ]] || bad "bad --rounds '$rounds'"
[[ $secs =~ ^[0-9]+([.][0-9]+)?$ ]] || bad "bad --seconds '$secs'"
[ -d "$build" ] || { echo "matrix.sh: build dir '$build' not found; build first" >&2; exit 1; }
: "${out:=$build/bench-results}"
mkdir -p "$out"
stamp=$(date +%Y%m%d-%H%M%S)

# sections: title | servers | baseline | conns | sizes
sections=()
if [ "$full" = 1 ]; then
	ncpu=$(nproc) max=$(( $(nproc) / 2 ))
	[ "$ncpu" -ge 4 ] || max=$ncpu
	threads="" n=1
	while [ "$n" -le "$max" ]; do
		threads="$threads ringio-t$n"
		n=$((n * 2))
	done
	sections=(
		"echo servers|epoll uring libuv ringio ringio-epoll ringio-copy|epoll|1 50 500|64 4096 65536"
		"proxies: loadgen -> proxy -> epoll echo|haproxy haproxy-splice ringio-proxy ringio-proxy-epoll ringio-proxy-copy ringio-proxy-splice|haproxy|1 50 500|64 4096 65536"
		"threads: ringio-echo (io_uring) with N threads, 500 connections; x_ is against one thread|${threads# }|ringio-t1|500|64 4096"
		"datagrams: UDP echo, one datagram in flight per socket|udp-epoll udp-uring ringio-udp ringio-udp-epoll|udp-epoll|1 50 500|64 1400"
	)
else
	sections=(
		"echo servers|epoll uring ringio|epoll|50 500|64 65536"
		"proxies: loadgen -> proxy -> epoll echo|haproxy ringio-proxy|haproxy|50|64"
		"datagrams: UDP echo, one datagram in flight per socket|udp-epoll udp-uring ringio-udp ringio-udp-epoll|udp-epoll|50|64"
	)
fi

# Runs in the whole job, for the progress lines (--quick: one round).
[ ${#quick[@]} -eq 0 ] || rounds=1
total=0
for s in "${sections[@]}"; do
	IFS='|' read -r _ srv _ conns sizes <<<"$s"
	total=$((total + $(wc -w <<<"$srv") * $(wc -w <<<"$conns") * $(wc -w <<<"$sizes") * rounds))
done

rc=0 done=0 i=0 tables=()
for s in "${sections[@]}"; do
	IFS='|' read -r title srv base conns sizes <<<"$s"
	i=$((i + 1))
	echo "== $title"
	bench/run.sh --build-dir "$build" --rounds "$rounds" --seconds "$secs" \
		--warmup "$warm" --conns "$conns" --sizes "$sizes" --servers "$srv" \
		--baseline "$base" --progress "$done/$total" \
		--table "$out/$stamp-$i.txt" "${quick[@]}" || rc=1
	tables+=("$base=$out/$stamp-$i.txt")
	done=$((done + $(wc -w <<<"$srv") * $(wc -w <<<"$conns") * $(wc -w <<<"$sizes") * rounds))
	echo
done

plot=$out/matrix-$stamp.png
if bench/plot.sh "$plot" "${tables[@]}"; then
	echo "plot of the ratios: $plot"
else
	echo "matrix.sh: no plot (bench/plot.sh failed; is gnuplot installed?)" >&2
	rc=1
fi
exit $rc
