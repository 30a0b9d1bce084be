#!/usr/bin/env bash
# test/man_pages.sh ROOT [TOOLS_DIR]
#
# The man pages are complete and render cleanly:
#  - every function ringio.h exports (RIO_API) has man/man3/NAME.3, either
#    a page whose NAME section lists it or a `.so` link to such a page;
#  - ringio(7) and a section-1 page for each tool exist;
#  - every page renders with no warning from groff -man -ww -z nor from
#    man --warnings;
#  - with TOOLS_DIR, every --flag a tool's --help prints is in its page.
# Prints each problem; exit 1 if there is any.
set -uo pipefail
root=${1:?usage: man_pages.sh ROOT [TOOLS_DIR]}
tools=${2:-}
man=$root/man
bad=0
problem() { echo "man_pages: $*"; bad=$((bad + 1)); }

for cmd in groff man; do
	command -v "$cmd" >/dev/null || { echo "man_pages: $cmd is not installed (Debian: groff-base, man-db)"; exit 1; }
done
[ -d "$man/man3" ] || { echo "man_pages: no $man/man3"; exit 1; }

# The NAME section of a page: the text between .SH NAME and the next .SH.
names_of() {
	awk '/^\.SH /{ on = ($2 == "NAME") ; next } on' "$1" | tr -d '\\' | tr ',' ' '
}

fns=$(sed -n 's/^RIO_API[^(]*[ *]\(rio_[a-z0-9_]*\)(.*/\1/p' "$root/include/ringio.h" | sort -u)
nfn=$(wc -w <<<"$fns")
[ "$nfn" -ge 40 ] || problem "found only $nfn RIO_API functions in ringio.h: the parser is broken"
for f in $fns; do
	page=$man/man3/$f.3
	if [ ! -f "$page" ]; then
		problem "$f has no page (man/man3/$f.3)"
		continue
	fi
	target=$page
	if first=$(head -n1 "$page") && [[ $first == .so\ * ]]; then
		target=$man/${first#.so }
		[ -f "$target" ] || { problem "$f.3 links to missing ${first#.so }"; continue; }
	fi
	names_of "$target" | grep -qw -- "$f" ||
		problem "$f: the NAME section of $(basename "$target") does not list it"
done

for p in man7/ringio.7 man1/ringio-echo.1 man1/ringio-proxy.1 man1/ringio-probe.1; do
	[ -f "$man/$p" ] || problem "missing man/$p"
done

npages=0
while IFS= read -r -d '' p; do
	npages=$((npages + 1))
	rel=${p#"$man"/}
	out=$(cd "$man" && groff -man -ww -z -Tutf8 "$rel" 2>&1)
	[ -z "$out" ] || problem "$rel: groff -man -ww -z: $out"
	out=$(cd "$man" && MANWIDTH=80 man --warnings -l "$rel" 2>&1 >/dev/null)
	[ -z "$out" ] || problem "$rel: man --warnings: $out"
done < <(find "$man" -type f -name '*.[0-9]' -print0)

if [ -n "$tools" ]; then
	for t in ringio-echo ringio-proxy ringio-probe; do
		[ -x "$tools/$t" ] || { problem "$tools/$t not built"; continue; }
		page=$man/man1/$t.1
		[ -f "$page" ] || continue
		help=$("$tools/$t" --help 2>&1)
		flags=$(grep -o -- '--[a-z][a-z-]*' <<<"$help" | sort -u)
		[ -n "$flags" ] || [ "$t" = ringio-probe ] || problem "$t --help printed no flags: $help"
		for fl in $flags; do
			grep -q -- "\\\\-\\\\-${fl#--}\\b" "$page" ||
				problem "$t: $fl (from --help) is not in man1/$t.1"
		done
	done
fi

echo "man_pages: $nfn functions, $npages page files, $bad problem(s)"
[ "$bad" = 0 ]
