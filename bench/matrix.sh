#!/usr/bin/env bash
# bench/matrix.sh — the performance matrix in one command.
#
#   bench/matrix.sh [--build-dir DIR] [--rounds R] [--seconds S] [--quick]
#
# Echo rows: 1, 50 and 500 connections x 64 B, 4 KiB and 64 KiB for the
# hand-written epoll server, the raw liburing server, libuv's echo,
# ringio-echo on io_uring and on epoll (--splice auto: a connection that
# fills a whole buffer moves on to a pipe) and ringio-copy (io_uring,
# --splice off); x_ columns are ratios to epoll measured in the same
# round. Proxy rows: the load generator through a proxy to the epoll echo
# server, for haproxy (mode tcp, nbthread 1; haproxy-splice is the same
# with splicing forced both ways), ringio-proxy on io_uring and on epoll
# (--splice auto), and ringio-proxy-copy / ringio-proxy-splice (--splice
# off / on: what auto chooses between), all in the same place on the same
# cores; x_ columns are ratios to haproxy in the same round. Multi-core
# rows: ringio-echo with 1, 2, 4, ... threads (up to half the CPUs, so the
# generator gets the other half; on a machine with fewer than 4 CPUs up to
# all of them, the generator then sharing, which the table flags) at 500
# connections; x_rtt is the ratio to one thread, and the target is 0.8 N.
# Every row is a median over rounds that alternate the servers' order
# (bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build rounds=3 secs=3 warm=1 quick=()
while [ $# -gt 0 ]; do
	case $1 in
	--build-dir) build=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--seconds) secs=$2; shift ;;
	--quick) quick=(--quick) ;;
	-h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "matrix.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
	shift
done
common=(--build-dir "$build" --rounds "$rounds" --seconds "$secs"
	--warmup "$warm" --conns "1 50 500" --sizes "64 4096 65536" "${quick[@]}")
rc=0
echo "== echo servers"
bench/run.sh "${common[@]}" --servers "epoll uring libuv ringio ringio-epoll ringio-copy" \
	--baseline epoll || rc=1
echo
echo "== proxies: loadgen -> proxy -> epoll echo"
bench/run.sh "${common[@]}" \
	--servers "haproxy haproxy-splice ringio-proxy ringio-proxy-epoll ringio-proxy-copy ringio-proxy-splice" \
	--baseline haproxy || rc=1
ncpu=$(nproc) max=$(( $(nproc) / 2 ))
[ "$ncpu" -ge 4 ] || max=$ncpu
threads="" n=1
while [ "$n" -le "$max" ]; do
	threads="$threads ringio-t$n"
	n=$((n * 2))
done
echo
echo "== threads: ringio-echo (io_uring) with N threads, 500 connections; x_ is against one thread"
bench/run.sh "${common[@]}" --conns 500 --sizes "64 4096" --servers "$threads" \
	--baseline ringio-t1 || rc=1
exit $rc
