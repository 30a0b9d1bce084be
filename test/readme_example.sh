#!/usr/bin/env bash
# test/readme_example.sh ROOT CC LIBDIR [BACKEND]
#
# README's "echo server in 30 lines", as README shows it: cut out of
# README.md (the C block after the readme-example marker), compiled with
# the project's warnings as errors against the built library, run, and
# checked to echo on 127.0.0.1:7000 (the port the example uses), with
# RINGIO_BACKEND=BACKEND. RIO_EXAMPLE_CFLAGS carries a sanitizer build's
# flags. Every wait is bounded.
set -uo pipefail
root=${1:?usage: readme_example.sh ROOT CC LIBDIR [BACKEND]}
cc=${2:?} libdir=${3:?} backend=${4:-auto}
work=$(mktemp -d /tmp/rio-readme.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "readme_example: $*"; exit 1; }

bash "$root/test/readme_cut.sh" readme-example "$root/README.md" "$work/example.c" || fail "cannot cut the example out of README.md"
[ "$(wc -l <"$work/example.c")" -ge 20 ] || fail "no C example after the readme-example marker in README.md"

# shellcheck disable=SC2086 # RIO_EXAMPLE_CFLAGS: the build's sanitizer flags
"$cc" -std=c11 ${RIO_EXAMPLE_CFLAGS:-} -Wall -Wextra -Wno-unused-parameter -Werror -I"$root/include" \
	"$work/example.c" -L"$libdir" -Wl,-rpath,"$libdir" -lringio -o "$work/example" ||
	fail "README's example does not compile"

port_open() { timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/7000' 2>/dev/null; }
port_open && fail "127.0.0.1:7000 is already taken by another program: cannot run README's example"
RINGIO_BACKEND=$backend "$work/example" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 50); do # 5 s to come up
	port_open && break
	kill -0 "$pid" 2>/dev/null || fail "the example exited: $(cat "$work/log")"
	sleep 0.1
done
port_open || fail "the example does not listen on 127.0.0.1:7000 after 5 s"

# Three clients at once, each a few messages, every reply checked.
for c in 1 2 3; do
	(
		exec 3<>/dev/tcp/127.0.0.1/7000 || exit 1
		for i in 1 2 3 4 5; do
			msg="client $c message $i $(head -c 600 /dev/zero | tr '\0' x)"
			printf '%s\n' "$msg" >&3
			IFS= read -r -t 5 reply <&3 || { echo "client $c: no reply to message $i"; exit 1; }
			[ "$reply" = "$msg" ] || { echo "client $c: reply $i differs"; exit 1; }
		done
	) &
done
bad=0
for _ in 1 2 3; do wait -n || bad=$((bad + 1)); done
kill -0 "$pid" 2>/dev/null || fail "the example died while serving: $(cat "$work/log")"
[ "$bad" = 0 ] || fail "$bad of 3 clients were not echoed"
echo "readme_example: README's echo server echoed 3 clients x 5 messages (backend $backend)"
