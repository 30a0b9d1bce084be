#!/usr/bin/env bash
# bench/run.sh — compare echo servers under rio-loadgen, one core each.
#
# For every (conns, size) cell and every round, each server runs in turn
# (the order flips every round so slow drift cancels): a fresh server process
# pinned to one CPU, rio-loadgen pinned to another, warmup, then a measured
# window. rio-loadgen samples the server's CPU time itself, at the exact
# edges of the measured window (--stat-pid), so warmup and connection setup
# are excluded. The table shows medians over rounds; the x_ columns are the
# median of per-round ratios to the epoll baseline measured in the same
# round, because only ratios taken side by side mean anything on a shared
# machine.
#
# Plain bash + awk (mawk is enough); every wait is bounded.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=build
ROUNDS=3
SECS=5
WARMUP=1
CONNS="50 500"
SIZES="64 65536"
SERVERS="epoll uring ringio ringio-epoll"
BASELINE=epoll
SRV_CPU=0
LG_CPU=1
BASE_PORT=23400
QUIET_WAIT=10  # seconds to wait for an idle machine before each run
QUIET_PCT=15   # a CPU busier than this (percent) counts as not idle
RAW=""
TABLE=""
PROGRESS=0/0 # runs done before this call / runs in the whole job (0: this call's)
declare -A EXTRA=() # servers added with --add-server

usage() {
	cat <<'EOF'
usage: bench/run.sh [--build-dir DIR] [--rounds R] [--seconds S] [--warmup S]
                    [--conns "50 500"] [--sizes "64 65536"]
                    [--servers "epoll uring ringio"] [--add-server 'NAME=BIN ARGS']
                    [--server-cpu C] [--loadgen-cpu C] [--port BASE]
                    [--quiet-wait S] [--raw FILE] [--quick] [--baseline NAME]

Servers (binaries relative to the build dir; a missing one is skipped):
  epoll         bench/rio-epoll-echo             hand-written epoll baseline
  uring         bench/rio-uring-echo             raw liburing floor
  libuv         bench/rio-uv-echo                libuv's echo (libuv1-dev)
  ringio        tools/ringio-echo --backend uring --threads 1
  ringio-epoll  tools/ringio-echo --backend epoll --threads 1
  ringio-auto   tools/ringio-echo --backend auto --threads 1
  ringio-copy   ringio-echo on io_uring with --splice off (never splices)
  ringio-tN, ringio-epoll-tN   ringio-echo --threads N (uring / epoll):
                the server on CPUs 0..N-1 and N generator processes on
                CPUs N..2N-1, or on every CPU (shared, flagged) when the
                machine has fewer than 2N; the multi-core rows
Datagram rows (the generator sends UDP: one datagram in flight per socket;
compare them with --baseline udp-epoll):
  udp-epoll     bench/rio-udp-echo              hand-written epoll, recvmmsg/sendmmsg
  udp-uring     bench/rio-udp-uring-echo        raw liburing floor (multishot
                recvmsg, a send with the address per datagram)
  ringio-udp    tools/ringio-echo --udp --backend uring --threads 1
  ringio-udp-epoll  the same on epoll
Proxy rows (bench/proxy_pair.sh: the proxy in front of rio-epoll-echo):
  ringio-proxy, ringio-proxy-epoll (--splice auto), ringio-proxy-copy,
  ringio-proxy-splice (--splice off / on), readme-proxy (README's 60-line
  proxy), haproxy (Debian's, nbthread 1),
  haproxy-splice (haproxy splicing both ways), haproxy-splice-auto
--add-server 'NAME=BIN ARGS' defines another (and adds it to the list), e.g.
  --add-server 'uring-16k=bench/rio-uring-echo --buf-size 16384'
Each server gets --port P --addr 127.0.0.1 appended.

--quick        one round of 1 s (0.5 s warmup), no idle wait: a smoke test
--quiet-wait S before each run, wait up to S s for both CPUs to be idle
               (default 10; runs that started on a busy machine are counted)
--raw FILE     also keep the per-run results there
--baseline N   the server the x_ columns divide by (default epoll)
--progress D/T this call's runs are part of a job of T runs, D of them done
               before it: the progress lines on stderr count the whole job
--table FILE   also write the final table there
Exit status: 0 all runs clean, 1 a run failed or echoed wrong, 2 bad usage.
EOF
}

die_usage() {
	echo "run.sh: $*" >&2
	echo "run.sh: try --help" >&2
	exit 2
}

need_arg() { [ $# -ge 2 ] || die_usage "$1 needs a value"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_secs() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--build-dir) need_arg "$@"; BUILD=$2; shift ;;
		--rounds) need_arg "$@"; ROUNDS=$2; shift ;;
		--seconds) need_arg "$@"; SECS=$2; shift ;;
		--warmup) need_arg "$@"; WARMUP=$2; shift ;;
		--conns) need_arg "$@"; CONNS=$2; shift ;;
		--sizes) need_arg "$@"; SIZES=$2; shift ;;
		--servers) need_arg "$@"; SERVERS=$2; shift ;;
		--add-server) need_arg "$@"; add_server "$2"; shift ;;
		--server-cpu) need_arg "$@"; SRV_CPU=$2; shift ;;
		--loadgen-cpu) need_arg "$@"; LG_CPU=$2; shift ;;
		--port) need_arg "$@"; BASE_PORT=$2; shift ;;
		--quiet-wait) need_arg "$@"; QUIET_WAIT=$2; shift ;;
		--raw) need_arg "$@"; RAW=$2; shift ;;
		--baseline) need_arg "$@"; BASELINE=$2; shift ;;
		--progress) need_arg "$@"; PROGRESS=$2; shift ;;
		--table) need_arg "$@"; TABLE=$2; shift ;;
		--quick) ROUNDS=1 SECS=1 WARMUP=0.5 QUIET_WAIT=0 ;;
		-h | --help) usage; exit 0 ;;
		*) die_usage "unknown argument '$1'" ;;
		esac
		shift
	done
	is_uint "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || die_usage "bad --rounds '$ROUNDS'"
	is_secs "$SECS" && awk -v s="$SECS" 'BEGIN { exit !(s > 0) }' ||
		die_usage "bad --seconds '$SECS'"
	is_secs "$WARMUP" || die_usage "bad --warmup '$WARMUP'"
	is_uint "$SRV_CPU" || die_usage "bad --server-cpu '$SRV_CPU'"
	is_uint "$LG_CPU" || die_usage "bad --loadgen-cpu '$LG_CPU'"
	is_uint "$QUIET_WAIT" || die_usage "bad --quiet-wait '$QUIET_WAIT'"
	[[ $PROGRESS =~ ^[0-9]+/[0-9]+$ ]] || die_usage "bad --progress '$PROGRESS' (want DONE/TOTAL)"
	is_uint "$BASE_PORT" && [ "$BASE_PORT" -ge 1024 ] &&
		[ "$BASE_PORT" -le 64000 ] || die_usage "bad --port '$BASE_PORT'"
	local v
	for v in $CONNS $SIZES; do
		is_uint "$v" && [ "$v" -ge 1 ] || die_usage "bad conns/size '$v'"
	done
	[ -n "$CONNS" ] && [ -n "$SIZES" ] && [ -n "$SERVERS" ] ||
		die_usage "empty --conns, --sizes or --servers"
}

add_server() {
	local name=${1%%=*} cmd=${1#*=}
	[[ $1 == *=* && $name =~ ^[A-Za-z0-9_.-]+$ && -n $cmd ]] ||
		die_usage "--add-server wants 'NAME=BIN ARGS', got '$1'"
	EXTRA[$name]=$cmd
	[[ " $SERVERS " == *" $name "* ]] || SERVERS="$SERVERS $name"
}

# The command line of server $1, binary relative to the build dir. Add a
# server here (one line), or ad hoc with --add-server.
server_cmd() {
	case $1 in
	epoll) echo "bench/rio-epoll-echo" ;;
	uring) echo "bench/rio-uring-echo" ;;
	ringio) echo "tools/ringio-echo --backend uring --threads 1" ;;
	ringio-epoll) echo "tools/ringio-echo --backend epoll --threads 1" ;;
	ringio-copy) echo "tools/ringio-echo --backend uring --threads 1 --splice off" ;;
	ringio-auto) echo "tools/ringio-echo --backend auto --threads 1" ;;
	udp-epoll) echo "bench/rio-udp-echo" ;;
	udp-uring) echo "bench/rio-udp-uring-echo" ;;
	ringio-udp) echo "tools/ringio-echo --backend uring --threads 1 --udp --buf-count 64" ;;
	ringio-udp-epoll) echo "tools/ringio-echo --backend epoll --threads 1 --udp --buf-count 64" ;;
	ringio-t[1-9]*) echo "tools/ringio-echo --backend uring --threads ${1#ringio-t}" ;;
	ringio-epoll-t[1-9]*) echo "tools/ringio-echo --backend epoll --threads ${1#ringio-epoll-t}" ;;
	libuv) echo "bench/rio-uv-echo" ;;
	ringio-proxy | ringio-proxy-epoll | ringio-proxy-copy | ringio-proxy-splice | \
		readme-proxy | haproxy | haproxy-splice | haproxy-splice-auto)
		echo "@bench/proxy_pair.sh $1" ;;
	*) [ -n "${EXTRA[$1]:-}" ] && echo "${EXTRA[$1]}" ;;
	esac
}

# The generator's flags for server $1: datagram rows send UDP.
lg_mode() {
	case $1 in
	udp-* | *-udp | *-udp-*) echo "--udp" ;;
	esac
}

# Threads of a multi-core row (ringio-tN), else 1.
server_threads() {
	if [[ $1 =~ ^ringio-(epoll-)?t([0-9]+)$ ]]; then
		echo "${BASH_REMATCH[2]}"
	else
		echo 1
	fi
}

# Where server $1 and its load run: sets PIN_SRV, PIN_LG, STAT_CPU and
# LG_PROCS. One thread: the --server-cpu / --loadgen-cpu pair. N threads:
# the server on CPUs 0..N-1 and N generator processes on the next N, or
# on all CPUs when there are not 2N (SHARED=1: the generator then takes
# CPU from the server, and the row says so).
placement() {
	local n ncpu
	n=$(server_threads "$1")
	ncpu=$(nproc)
	LG_PROCS=1 SHARED=0
	if [ "$n" = 1 ]; then
		PIN_SRV=$PIN_SRV1 PIN_LG=$PIN_LG1 STAT_CPU=$STAT_CPU1
		return
	fi
	STAT_CPU="" LG_PROCS=$n
	[ "$n" -le "$ncpu" ] || { n=$ncpu; SHARED=1; }
	PIN_SRV="taskset -c 0-$((n - 1))"
	if [ $((2 * n)) -le "$ncpu" ]; then
		PIN_LG="taskset -c $n-$((2 * n - 1))"
	else
		PIN_LG="taskset -c 0-$((ncpu - 1))" SHARED=1
	fi
}

# ---- processes ---------------------------------------------------------

SPID=""
LPID=""
TMP=""

stop_pid() { # pid: TERM, up to 3 s, then KILL; always reaped
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# A server command's binary: "@path" is in the source tree, the rest in
# the build dir.
bin_path() {
	case $1 in
	@*) echo "$ROOT/${1#@}" ;;
	*) echo "$BDIR/$1" ;;
	esac
}

# Stop the server, and the upstream a proxy row started beside it.
stop_server() {
	stop_pid "$SPID"
	SPID=""
	if [ -n "$TMP" ] && [ -s "$TMP/backend.pid" ]; then
		stop_pid "$(cat "$TMP/backend.pid")"
		rm -f "$TMP/backend.pid"
	fi
}

cleanup() {
	stop_pid "$LPID"
	stop_server
	LPID=""
	[ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

port_open() { # true if something accepts on 127.0.0.1:$1
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Start server $1 on a free port; sets SPID and PORT. Fails if it never
# accepts (the log is shown).
start_server() {
	local name=$1 try i
	local -a cmd
	read -r -a cmd <<<"$(server_cmd "$name")"
	cmd[0]=$(bin_path "${cmd[0]}")
	for try in 1 2 3 4 5; do
		PORT=$((BASE_PORT + NEXT_PORT % 500))
		NEXT_PORT=$((NEXT_PORT + 1))
		port_open "$PORT" && continue # someone else's
		$PIN_SRV "${cmd[@]}" --port "$PORT" --addr 127.0.0.1 \
			>"$TMP/server.log" 2>&1 &
		SPID=$!
		for i in $(seq 50); do # 5 s to come up
			kill -0 "$SPID" 2>/dev/null || break
			port_open "$PORT" && return 0
			sleep 0.1
		done
		stop_server
	done
	echo "run.sh: $name did not come up; its last log:" >&2
	sed 's/^/    /' "$TMP/server.log" >&2
	return 1
}

# Busy percent of each CPU over 0.3 s, as "cpuN=P" words.
cpu_busy() {
	local a b
	a=$(grep '^cpu[0-9]' /proc/stat)
	sleep 0.3
	b=$(grep '^cpu[0-9]' /proc/stat)
	printf '%s\n%s\n' "$a" "$b" | awk '
		{ busy = $2 + $3 + $4 + $7 + $8 + $9; tot = busy + $5 + $6 }
		$1 in b0 { db = busy - b0[$1]; dt = tot - t0[$1]
			   printf "%s=%d ", $1, (dt > 0 ? 100 * db / dt : 0); next }
		{ b0[$1] = busy; t0[$1] = tot }'
}

# Wait (bounded) until both our CPUs are idle. Returns 1 if they never were.
wait_quiet() {
	local deadline=$((SECONDS + QUIET_WAIT)) busy
	while :; do
		busy=$(cpu_busy)
		echo "$busy" | awk -v s="cpu$SRV_CPU" -v l="cpu$LG_CPU" -v max="$QUIET_PCT" '
			{ for (i = 1; i <= NF; i++) { split($i, kv, "=");
			  if ((kv[1] == s || kv[1] == l) && kv[2] + 0 > max) bad = 1 } }
			END { exit bad }' && return 0
		[ "$SECONDS" -ge "$deadline" ] && return 1
		sleep 0.5
	done
}

# One measured run; appends a line to $RAWF:
# conns size round server rtt p50 p99 cpu_rt core_rt errors lg_pct rc noisy
run_one() {
	local name=$1 conns=$2 size=$3 round=$4 noisy=0 rc limit out
	placement "$name"
	[ "$LG_PROCS" -le "$conns" ] || LG_PROCS=$conns
	wait_quiet || noisy=1
	start_server "$name" || {
		echo "$conns $size $round $name - - - - - - - 1 $noisy" >>"$RAWF"
		return 1
	}
	limit=$(awk -v a="$SECS" -v b="$WARMUP" 'BEGIN { printf "%d", a + b + 30 }')
	timeout "$limit" $PIN_LG "$LOADGEN" --host 127.0.0.1 --port "$PORT" \
		--conns "$conns" --size "$size" --seconds "$SECS" \
		--warmup "$WARMUP" --stat-pid "$SPID" $STAT_CPU --procs "$LG_PROCS" \
		$(lg_mode "$name") \
		>"$TMP/lg.out" 2>"$TMP/lg.err" &
	LPID=$!
	wait "$LPID"
	rc=$?
	LPID=""
	if ! kill -0 "$SPID" 2>/dev/null; then
		echo "run.sh: $name died during the run; its log:" >&2
		sed 's/^/    /' "$TMP/server.log" >&2
		rc=1
	fi
	stop_server
	[ -s "$TMP/lg.err" ] && sed "s/^/    [$name c=$conns s=$size] /" "$TMP/lg.err" >&2
	out=$(awk -v k="rtt_per_s p50_us p99_us srv_cpu_us_per_rt core_us_per_rt errors lg_cpu_pct" '
		BEGIN { n = split(k, key, " ") }
		{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
		END { for (i = 1; i <= n; i++)
			printf "%s ", (key[i] in v && v[key[i]] != "") ? v[key[i]] : "-" }' \
		"$TMP/lg.out")
	echo "$conns $size $round $name $out$rc $noisy $SHARED" >>"$RAWF"
	set -- $out
	printf '  round %d  %-12s conns=%-5s size=%-6s rtt/s=%s p50=%s p99=%s cpu/rt=%s lg%%=%s%s%s%s\n' \
		"$round" "$name" "$conns" "$size" "$1" "$2" "$3" "$4" "$7" \
		"$([ "$rc" = 0 ] || echo " [rc=$rc]")" \
		"$([ "$noisy" = 0 ] || echo " [machine busy]")" \
		"$([ "$SHARED" = 0 ] || echo " [generator shares the server's CPUs]")"
	return "$rc"
}

# One progress line on stderr before each run: what runs, how far the job
# is, and the time left at the pace of this call's runs so far (before the
# first, at warmup + measured window + 1 s a run).
progress() {
	local done=$((PROG_DONE + PROG_HERE)) per left
	if [ "$PROG_HERE" -gt 0 ]; then
		per=$(awk -v t=$((SECONDS - PROG_T0)) -v n="$PROG_HERE" 'BEGIN { print t / n }')
	else
		per=$(awk -v a="$SECS" -v b="$WARMUP" 'BEGIN { print a + b + 1 }')
	fi
	left=$(awk -v p="$per" -v n=$((PROG_TOTAL - done)) 'BEGIN { s = int(p * n + 0.5);
		printf "%dm%02ds", s / 60, s % 60 }')
	printf '[bench] run %d/%d, %s left | row %s\n' $((done + 1)) "$PROG_TOTAL" \
		"$left" "$1" >&2
}

# ---- report ------------------------------------------------------------

report() {
	awk -v order="$ACTIVE" -v base="$BASELINE" '
	function median(list,   a, n, i, j, t) {
		n = split(list, a, " ")
		if (n == 0) return "-"
		for (i = 2; i <= n; i++) {        # insertion sort, numeric
			t = a[i] + 0
			for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
			a[j + 1] = t
		}
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function add(arr, key, v) { arr[key] = (key in arr) ? arr[key] " " v : v }
	function fmt(v, f) { return v == "-" ? "-" : sprintf(f, v) }
	{
		c = $1; s = $2; r = $3; srv = $4
		cell = c SUBSEP s
		if (!(cell in seen)) { seen[cell] = 1; cells[++ncell] = cell }
		k = cell SUBSEP srv
		runs[k]++
		if ($6 != "-" && $10 == 0 && $12 == 0) {
			ok[k]++
			add(rtt, k, $5); add(p50, k, $6); add(p99, k, $7); add(lg, k, $11)
			if ($8 != "na" && $8 != "-") add(cpu, k, $8)
			if ($9 != "na" && $9 != "-") add(core, k, $9)
			R[k, r] = $5; C[k, r] = $8
		}
		if ($13 == 1) noisy++
		if ($14 == 1) shared[srv] = 1
		if (r > maxr) maxr = r
	}
	END {
		nsrv = split(order, srvs, " ")
		printf "%-6s %-6s %-19s %10s %9s %9s %10s %10s %7s %7s %4s %5s\n",
		       "conns", "size", "server", "rtt/s", "p50_us", "p99_us",
		       "cpu_us/rt", "core_us/rt", "x_rtt", "x_cpu", "lg%", "ok"
		for (i = 1; i <= ncell; i++) {
			split(cells[i], cs, SUBSEP)
			for (j = 1; j <= nsrv; j++) {
				k = cells[i] SUBSEP srvs[j]
				if (!(k in runs)) continue
				e = cells[i] SUBSEP base
				xr = ""; xc = ""
				for (r = 1; r <= maxr; r++) {
					if (!((k, r) in R) || !((e, r) in R)) continue
					if (R[e, r] > 0) xr = xr " " R[k, r] / R[e, r]
					if (C[e, r] > 0 && C[k, r] != "na")
						xc = xc " " C[k, r] / C[e, r]
				}
				printf "%-6s %-6s %-19s %10s %9s %9s %10s %10s %7s %7s %4s %2d/%-2d\n",
				       cs[1], cs[2], srvs[j],
				       fmt(median(rtt[k]), "%.0f"), fmt(median(p50[k]), "%.1f"),
				       fmt(median(p99[k]), "%.1f"), fmt(median(cpu[k]), "%.2f"),
				       fmt(median(core[k]), "%.2f"), fmt(median(xr), "%.2f"),
				       fmt(median(xc), "%.2f"), fmt(median(lg[k]), "%.0f"),
				       ok[k], runs[k]
			}
		}
		if (noisy)
			printf "\nnote: %d run(s) started while a CPU was busy with other work\n", noisy
		for (j = 1; j <= nsrv; j++)
			if (srvs[j] in shared)
				printf "note: %s: too few CPUs for its own; the generator shared the server'"'"'s CPUs\n", srvs[j]
	}' "$RAWF"
}

# ---- main --------------------------------------------------------------

main() {
	parse_args "$@"
	if [ -d "$BUILD" ]; then
		BDIR=$(cd "$BUILD" && pwd)
	elif [ -d "$ROOT/$BUILD" ]; then
		BDIR=$(cd "$ROOT/$BUILD" && pwd)
	else
		echo "run.sh: build dir '$BUILD' not found" >&2
		exit 1
	fi
	LOADGEN=$BDIR/bench/rio-loadgen
	[ -x "$LOADGEN" ] || { echo "run.sh: $LOADGEN missing; build it first" >&2; exit 1; }

	# Pinning needs two CPUs we may use; without them (a small CI box) run
	# unpinned rather than not at all, and say so.
	PIN_SRV1="taskset -c $SRV_CPU" PIN_LG1="taskset -c $LG_CPU"
	STAT_CPU1="--stat-cpu $SRV_CPU"
	if ! taskset -c "$SRV_CPU" true 2>/dev/null || ! taskset -c "$LG_CPU" true 2>/dev/null ||
		[ "$SRV_CPU" = "$LG_CPU" ]; then
		echo "run.sh: cannot pin to CPUs $SRV_CPU and $LG_CPU; running unpinned (figures are rough)" >&2
		PIN_SRV1="" PIN_LG1="" STAT_CPU1=""
	fi

	ACTIVE=""
	local s cmd
	for s in $SERVERS; do
		cmd=$(server_cmd "$s")
		[ -n "$cmd" ] || die_usage "unknown server '$s' (see --help, or --add-server)"
		if [ -x "$(bin_path "${cmd%% *}")" ]; then
			ACTIVE="$ACTIVE $s"
		else
			echo "run.sh: skipping $s: $(bin_path "${cmd%% *}") not built" >&2
		fi
		if [[ $s == haproxy* ]] && ! command -v haproxy >/dev/null; then
			echo "run.sh: skipping $s: not installed (apt-get install haproxy)" >&2
			ACTIVE=${ACTIVE% "$s"}
		fi
	done
	[ -n "$ACTIVE" ] || { echo "run.sh: no server to run" >&2; exit 1; }
	[[ " $ACTIVE " == *" $BASELINE "* ]] || echo "run.sh: no $BASELINE baseline: the x_ columns stay empty" >&2

	TMP=$(mktemp -d /tmp/rio-bench.XXXXXX)
	export RIO_BENCH_BDIR=$BDIR RIO_BENCH_TMP=$TMP
	RAWF=$TMP/raw
	: >"$RAWF"
	NEXT_PORT=0
	echo "# $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
	echo "# tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), build $BDIR"
	echo "# server CPU $SRV_CPU, loadgen CPU $LG_CPU; $ROUNDS round(s) of ${SECS} s after ${WARMUP} s warmup"
	echo "# servers:$ACTIVE (x_ columns: ratio to $BASELINE in the same round)"

	local failed=0 round c z list srv cell=0 ncells nsrv
	ncells=$(( $(wc -w <<<"$CONNS") * $(wc -w <<<"$SIZES") ))
	nsrv=$(wc -w <<<"$ACTIVE")
	PROG_DONE=${PROGRESS%/*} PROG_TOTAL=${PROGRESS#*/} PROG_HERE=0
	[ "$PROG_TOTAL" -gt 0 ] || PROG_TOTAL=$((ncells * ROUNDS * nsrv))
	PROG_T0=$SECONDS
	for c in $CONNS; do
		for z in $SIZES; do
			cell=$((cell + 1))
			for round in $(seq "$ROUNDS"); do
				list=$ACTIVE
				# Every other round runs the servers in reverse order.
				[ $((round % 2)) = 0 ] && list=$(echo $ACTIVE | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
				for srv in $list; do
					progress "$cell/$ncells: $c conns x $z B, round $round/$ROUNDS, $srv"
					run_one "$srv" "$c" "$z" "$round" || failed=1
					PROG_HERE=$((PROG_HERE + 1))
				done
			done
		done
	done
	echo
	report | tee ${TABLE:+"$TABLE"}
	[ -n "$RAW" ] && cp "$RAWF" "$RAW"
	return "$failed"
}

main "$@"
