#!/usr/bin/env bash
# test/readme_cut.sh MARKER README OUT
#
# Cut the C block that follows the `<!-- MARKER` comment out of README.md
# into OUT, as README shows it. Fails (exit 1) when there is none.
set -euo pipefail
marker=${1:?usage: readme_cut.sh MARKER README OUT} readme=${2:?} out=${3:?}
awk -v m="<!-- $marker" 'index($0, m) == 1 { on = 1; next }
     on == 1 && /^```c$/ { on = 2; next }
     on == 2 && /^```$/ { exit }
     on == 2 { print }' "$readme" >"$out.tmp"
[ -s "$out.tmp" ] || { echo "readme_cut: no C block after '<!-- $marker' in $readme" >&2; rm -f "$out.tmp"; exit 1; }
mv "$out.tmp" "$out"
