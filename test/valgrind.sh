#!/usr/bin/env bash
# The test suite under valgrind's memcheck, on the epoll backend: every
# memory error and every leak (definite or indirect) in any process of a
# test (the Criterion runner, each test's worker, the tools a test starts)
# fails the run. Builds its own directory (plain: no sanitizers, fault
# hooks on), prints each step, its process count and time, and on failure
# the valgrind logs that hold the errors.
#
#   test/valgrind.sh [--dir DIR] [NAME...]    (default DIR: build-valgrind;
#                                              NAMEs: run only those steps)
#
# Valgrind: --trace-children=yes (Criterion runs each test in a worker it
# forks and execs; the tool tests exec ringio-echo and ringio-proxy),
# --leak-check=full --errors-for-leak-kinds=definite,indirect (a block no
# pointer reaches is a leak; "still reachable" is what a process holds in
# its globals at exit, and "possibly lost" points into a block's middle,
# both normal for libc and Criterion (its nanomsg buffers) at exit), --error-exitcode=1, a log per process. Criterion does not look
# at its worker's exit status once the test's result is in, so the exit
# code alone would miss a worker's errors: every log must end in "ERROR
# SUMMARY: 0 errors", and a log with no summary (a process killed before
# valgrind could check it) fails too.
#
# What runs: every test binary on epoll (every Criterion test but 4),
# test/threads.c and its threaded-tool mode, and ringio-echo behind
# ringio-proxy stopped by SIGINT/SIGTERM (tools_check below). Left out:
#  - accept's 2 EMFILE tests, test_serve_emfile and proxy's
#    fd_exhaustion_waits_instead_of_closing: they lower RLIMIT_NOFILE to
#    make accept4 fail EMFILE. Valgrind emulates that limit instead of
#    passing it to the kernel (it keeps fds of its own above it, and
#    refuses any change to the hard limit), so the kernel accepts, and
#    valgrind closes the new fd as "beyond the limit": the client is lost
#    and the tests fail under valgrind, not because of the library.
#  - the soak runs 10 s of its load, not 60 (RIO_SOAK_MS; set it to
#    override): the same disconnects and resets, less repetition.
#  - the uring backend: memcheck does not model io_uring (what the kernel
#    writes into a buffer through the rings, a read's data, never becomes
#    "defined" for it, so every use of it would be reported); the epoll
#    backend's read/recv/accept are plain syscalls it models.
# Programs outside the project that tests start (redis-server,
# redis-benchmark, sh, timeout) run under valgrind too: skipping them
# (--trace-children-skip) would leave a log that ends at the exec with no
# summary, which reads like a killed process; they pass as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-valgrind
only=()
while [ $# -gt 0 ]; do
	case $1 in
	--dir) dir=$2; shift ;;
	-h | --help) sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "valgrind.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	*) only+=("$1") ;;
	esac
	shift
done
if ! command -v valgrind >/dev/null; then
	echo "valgrind.sh: valgrind is not installed (Debian: apt-get install valgrind)" >&2
	exit 1
fi

t0=$SECONDS
echo "== valgrind.sh: building $dir"
cmake -S . -B "$dir" -DRINGIO_FAULT_HOOKS=ON -DRINGIO_BUILD_BENCH=OFF \
	-DRINGIO_SANITIZE=OFF -DRINGIO_TSAN=OFF -DRINGIO_TEST_BACKENDS=epoll >/dev/null
cmake --build "$dir" -j"$(nproc)" >/dev/null
echo "== valgrind.sh: built in $((SECONDS - t0)) s; $(valgrind --version)"

root=$PWD
bin=$root/$dir/test
logs=$root/$dir/valgrind-logs
rm -rf "$logs"
mkdir -p "$logs"
export RINGIO_BACKEND=epoll
export RIO_SOAK_MS=${RIO_SOAK_MS:-10000}
vg=(valgrind --trace-children=yes --error-exitcode=1 --leak-check=full
    --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --num-callers=30
    --suppressions="$root/test/valgrind.supp")
cr=(--jobs=1)

# name | command (run from $dir/test). A Criterion filter excludes tests.
steps=(
	"accept|./test_accept ${cr[*]} --filter=accept/!(*emfile*)"
	"anyfd|./test_anyfd ${cr[*]}"
	"backend|./test_backend ${cr[*]}"
	"bufpool|./test_bufpool ${cr[*]}"
	"bufpool_dry|./test_bufpool_dry ${cr[*]}"
	"cancel|./test_cancel ${cr[*]}"
	"cancel_all|./test_cancel_all ${cr[*]}"
	"close|./test_close ${cr[*]}"
	"connect|./test_connect ${cr[*]}"
	"deadline|./test_deadline ${cr[*]}"
	"deadline_race|./test_deadline_race ${cr[*]}"
	"datagrams|./test_datagrams ${cr[*]}"
	"dgram|./test_dgram ${cr[*]}"
	"eagain|./test_eagain ${cr[*]}"
	"errors|./test_errors ${cr[*]}"
	"fd_reuse|./test_fd_reuse ${cr[*]}"
	"io|./test_io ${cr[*]}"
	"listener|./test_listener ${cr[*]}"
	"loop|./test_loop ${cr[*]}"
	"poll|./test_poll ${cr[*]}"
	"post|./test_post ${cr[*]}"
	"readiness|./test_readiness ${cr[*]}"
	"readme_proxy|./test_readme_proxy ${cr[*]}"
	"recv_cap|./test_recv_cap ${cr[*]}"
	"serve_fatal|./test_serve_fatal ${cr[*]}"
	"serve_faults|./test_serve_faults ${cr[*]}"
	"serve_halfclose|./test_serve_halfclose ${cr[*]}"
	"serve_rst|./test_serve_rst ${cr[*]}"
	"serve_shutdown|./test_serve_shutdown ${cr[*]}"
	"serve_silent|./test_serve_silent ${cr[*]}"
	"shutdown|./test_shutdown ${cr[*]}"
	"signal|./test_signal ${cr[*]}"
	"sockets|./test_sockets ${cr[*]}"
	"splice|./test_splice ${cr[*]}"
	"sq_full|./test_sq_full ${cr[*]}"
	"stop|./test_stop ${cr[*]}"
	"submit|./test_submit ${cr[*]}"
	"timeout|./test_timeout ${cr[*]}"
	"unix|./test_unix ${cr[*]}"
	"upstream|./test_upstream ${cr[*]}"
	"wakeup|./test_wakeup ${cr[*]}"
	"relay|./test_relay ${cr[*]}"
	"tiny_ring|./test_tiny_ring ${cr[*]}"
	"bulk|./test_bulk ${cr[*]}"
	"many_conns|./test_many_conns ${cr[*]}"
	"serve_10k|./test_serve_10k ${cr[*]}"
	"serve_soak|./test_serve_soak ${cr[*]}"
	"tool_echo|./test_tool_echo ${cr[*]}"
	"proxy|./test_proxy ${cr[*]} --filter=proxy/!(fd_exhaustion_waits_instead_of_closing)"
	"threads|./threads"
	"fuzz|./fuzz --seeds 20 --backends epoll"
	"threads_echo|./threads --tool $root/$dir/tools/ringio-echo --threads 2 --backend epoll"
	"tools_signals|@tools_check"
)

# The port a tool under valgrind prints on stderr once it listens (60 s).
tool_port() { # stderr-file sed-pattern pid
	for _ in $(seq 600); do
		p=$(sed -n "s/$2/\\1/p" "$1" | head -1)
		[ -n "$p" ] && { echo "$p"; return 0; }
		kill -0 "$3" 2>/dev/null || break
		sleep 0.1
	done
	echo "tool never listened: $(cat "$1")" >&2
	return 1
}
# Wait for a signalled tool (60 s at most); fail unless it exits 0.
tool_wait() { # pid name
	for _ in $(seq 600); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$1" 2>/dev/null; then
		kill -KILL "$1"
		echo "$2 did not exit within 60 s of its signal" >&2
		return 1
	fi
	local st=0
	wait "$1" || st=$?
	echo "$2 exited $st"
	[ "$st" -eq 0 ]
}
# ringio-echo and, in front of it, ringio-proxy (2 threads each, epoll,
# --splice auto then off),
# each under valgrind: a client (bash's /dev/tcp) pushes 4 MiB of random
# bytes through proxy -> echo -> proxy and compares what comes back; then
# the proxy is stopped with SIGINT and the echo with SIGTERM, and each must
# exit 0 (--error-exitcode=1 turns a valgrind error into exit 1).
tools_check() {
	tools_round auto && tools_round off
}
tools_round() { # --splice mode (auto: spliced relays; off: copying ones)
	local t=$root/$dir/tools out=$VALGRIND_LOGS size=$((4 << 20))
	local epid ppid eport pport fd rp ok=0
	"${vg[@]}" --log-file="$out/%p.log" "$t/ringio-echo" --port 0 \
		--threads 2 --backend epoll --splice "$1" >"$out/echo.out" 2>"$out/echo.err" &
	epid=$!
	eport=$(tool_port "$out/echo.err" '.*listening on 127.0.0.1:\([0-9]*\),.*' $epid) ||
		{ kill -KILL $epid; wait $epid; return 1; }
	"${vg[@]}" --log-file="$out/%p.log" "$t/ringio-proxy" \
		--listen 127.0.0.1:0 --upstream "127.0.0.1:$eport" \
		--threads 2 --backend epoll --splice "$1" >"$out/proxy.out" 2>"$out/proxy.err" &
	ppid=$!
	pport=$(tool_port "$out/proxy.err" '.* on 127.0.0.1:\([0-9]*\),.*' $ppid) ||
		{ kill -KILL $ppid $epid; wait $ppid $epid; return 1; }
	echo "--splice $1: echo on $eport (pid $epid), proxy on $pport (pid $ppid)"
	head -c $size /dev/urandom >"$out/sent"
	exec {fd}<>"/dev/tcp/127.0.0.1/$pport"
	timeout 300 head -c $size <&$fd >"$out/got" &
	rp=$!
	cat "$out/sent" >&$fd
	wait $rp || ok=1
	exec {fd}>&-
	if ! cmp "$out/sent" "$out/got"; then
		echo "the bytes through proxy and echo came back changed or short" \
			"($(stat -c %s "$out/got") of $size)"
		ok=1
	fi
	kill -INT $ppid
	tool_wait $ppid "ringio-proxy (SIGINT)" || ok=1
	kill -TERM $epid
	tool_wait $epid "ringio-echo (SIGTERM)" || ok=1
	cat "$out/proxy.out" "$out/echo.out"
	rm -f "$out/sent" "$out/got"
	return $ok
}

# Every test binary has a step, or is named here as left out (above):
# a new test file cannot be missed silently.
left_out=" test_serve_emfile "
for f in test/test_*.c; do
	t=$(basename "$f" .c)
	printf '%s\n' "${steps[@]}" | grep -q "^[^|]*|\./$t " ||
		[[ $left_out == *" $t "* ]] || {
		echo "valgrind.sh: $t has no step (add one, or to left_out)" >&2
		exit 1
	}
done

failed=()
ran=0
for s in "${steps[@]}"; do
	name=${s%%|*}
	cmd=${s#*|}
	if ((${#only[@]})) && [[ " ${only[*]} " != *" $name "* ]]; then
		continue
	fi
	ran=$((ran + 1))
	mkdir -p "$logs/$name"
	st=$SECONDS rc=0
	if [[ $cmd = @* ]]; then # a function that runs valgrind itself
		(VALGRIND_LOGS=$logs/$name; ${cmd#@}) >"$logs/$name/out.txt" 2>&1 || rc=$?
	else
		# shellcheck disable=SC2086 # split on purpose; no globbing
		(set -f; cd "$bin" && "${vg[@]}" --log-file="$logs/$name/%p.log" $cmd) \
			>"$logs/$name/out.txt" 2>&1 || rc=$?
	fi
	n=0 bad=()
	for f in "$logs/$name"/*.log; do
		[ -e "$f" ] || continue
		n=$((n + 1))
		grep -q 'ERROR SUMMARY: 0 errors' "$f" || bad+=("$f")
	done
	if [ "$rc" -ne 0 ] || ((${#bad[@]})) || [ "$n" -eq 0 ]; then
		failed+=("$name")
		echo "FAIL $name: exit $rc, $n processes, $((SECONDS - st)) s: $cmd"
		sed 's/^/    | /' "$logs/$name/out.txt" | tail -40
		for f in "${bad[@]}"; do
			echo "    valgrind errors (or no summary) in $f:"
			grep -v '^==[0-9]*== *$' "$f" | sed 's/^/    | /' | head -80
		done
	else
		echo "ok   $name: $n processes, $((SECONDS - st)) s: $cmd"
	fi
done
echo "== valgrind.sh: $ran steps in $((SECONDS - t0)) s (logs: $logs)"
if ((${#failed[@]})); then
	echo "valgrind.sh: FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "valgrind.sh: no memcheck errors, no definite or indirect leaks"
