#!/usr/bin/env bash
# bench/proxy_pair.sh KIND --port P [--addr A] — a proxy row's "server" for
# bench/run.sh: the load generator talks to a proxy on P, which forwards to
# the hand-written epoll echo server on P+1000. The echo server's pid goes
# to $RIO_BENCH_TMP/backend.pid (run.sh stops it), and the proxy is exec'd,
# so the pid run.sh measures CPU for is the proxy's. Both inherit run.sh's
# CPU pinning: every proxy runs in the same place on the same cores.
#   KIND: ringio-proxy | ringio-proxy-epoll (--splice auto, the default)
#         | ringio-proxy-copy | ringio-proxy-splice (--splice off / on)
#         | haproxy (mode tcp, nbthread 1)
#         | haproxy-splice (the same, splicing both ways: zero-copy through
#           a pipe, to measure splice against copying)
#         | haproxy-splice-auto (haproxy splices when it judges it pays)
#         | readme-proxy (README's "A proxy in 60 lines", built as
#           test/readme_proxy: one loop, io_uring where it can)
set -euo pipefail
kind=${1:-}
shift || true
port="" addr=127.0.0.1
while [ $# -gt 0 ]; do
	case $1 in
	--port) port=$2; shift ;;
	--addr) addr=$2; shift ;;
	*) echo "proxy_pair.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
	shift
done
[[ $port =~ ^[0-9]+$ ]] || { echo "proxy_pair.sh: --port P is required" >&2; exit 2; }
: "${RIO_BENCH_BDIR:?set by bench/run.sh}" "${RIO_BENCH_TMP:?set by bench/run.sh}"
up=$((port + 1000))

"$RIO_BENCH_BDIR/bench/rio-epoll-echo" --port "$up" --addr "$addr" >/dev/null 2>&1 &
echo $! >"$RIO_BENCH_TMP/backend.pid"
for _ in $(seq 50); do # up to 5 s for the echo server
	timeout 1 bash -c "exec 3<>/dev/tcp/$addr/$up" 2>/dev/null && break
	sleep 0.1
done

case $kind in
ringio-proxy*)
	be=uring splice=auto
	case $kind in
	ringio-proxy-epoll) be=epoll ;;
	ringio-proxy-copy) splice=off ;;
	ringio-proxy-splice) splice=on ;;
	ringio-proxy) ;;
	*) echo "proxy_pair.sh: unknown kind '$kind'" >&2; exit 2 ;;
	esac
	exec "$RIO_BENCH_BDIR/tools/ringio-proxy" --backend "$be" --splice "$splice" \
		--listen "$addr:$port" --upstream "$addr:$up" ;;
readme-proxy)
	bin=$RIO_BENCH_BDIR/test/readme_proxy
	[ -x "$bin" ] || { echo "proxy_pair.sh: $bin not built (tests off?)" >&2; exit 2; }
	exec "$bin" "$addr:$port" "$addr:$up" ;;
haproxy | haproxy-splice | haproxy-splice-auto)
	splice=""
	[ "$kind" = haproxy-splice ] &&
		splice=$'\toption splice-request\n\toption splice-response'
	[ "$kind" = haproxy-splice-auto ] && splice=$'\toption splice-auto'
	cfg=$RIO_BENCH_TMP/haproxy.cfg
	cat >"$cfg" <<CFG
global
	nbthread 1
	maxconn 4096
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
$splice
frontend f
	bind $addr:$port
	default_backend b
backend b
	server echo $addr:$up
CFG
	exec haproxy -f "$cfg" -db ;;
*)
	echo "proxy_pair.sh: unknown kind '$kind'" >&2
	exit 2 ;;
esac
