#!/usr/bin/env bash
# bench/plot.sh OUT.png|OUT.svg BASELINE=TABLE [BASELINE=TABLE ...]
#
# Draws the x_ columns of bench/run.sh tables (--table FILE) as bars: the
# throughput ratio (x_rtt, higher is better) and the CPU per round trip
# ratio (x_cpu, lower is better) of every server against the baseline of
# its table, measured in the same rounds. Baseline rows (1.00 by
# definition) are the dashed line; ringio's bars are in colour, the other
# servers' in grey. Needs gnuplot (Debian: gnuplot-nox).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/plot.sh OUT.png|OUT.svg BASELINE=TABLE ..." >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot not installed (apt-get install gnuplot-nox)" >&2; exit 1; }
out=$1
shift
data=$(mktemp /tmp/rio-plot.XXXXXX)
trap 'rm -f "$data"' EXIT
for t in "$@"; do
	base=${t%%=*} file=${t#*=}
	[ -s "$file" ] || { echo "plot.sh: no table in '$file'" >&2; exit 1; }
	awk -v base="$base" '
		function sz(b) { return b >= 1024 ? b / 1024 " KiB" : b " B" }
		$1 ~ /^[0-9]+$/ && $3 != base && $9 != "-" && $10 != "-" {
			printf "\"%s\\n%s x %s\\nvs %s\" %s %s %d\n", $3, $1, sz($2), base, $9, $10, ($3 ~ /^ringio/)
		}' "$file" >>"$data"
done
[ -s "$data" ] || { echo "plot.sh: no ratios to plot" >&2; exit 1; }
n=$(wc -l <"$data")
width=$((260 + 110 * n))
case $out in
*.svg) term="svg size $width,900 dynamic font \"sans,11\" background \"white\"" ;;
*.png) term="pngcairo size $width,900 font \"sans,10\" background \"white\"" ;;
*) echo "plot.sh: '$out': want a .png or .svg name" >&2; exit 2 ;;
esac
gnuplot <<EOF
set terminal $term
set output "$out"
set multiplot layout 2,1 title "ringio benchmark ratios, $(date +%Y-%m-%d), $(nproc) CPUs, $(uname -r)"
set style fill solid 0.7 border -1
set boxwidth 0.6
set grid ytics
set xrange [-0.6:$n - 0.4]
set yrange [0:*]
set offsets 0, 0, graph 0.15, 0
set bmargin 5
set termoption noenhanced
unset key
set ylabel "x_rtt: round trips/s vs baseline\n(higher is better)"
set xtics scale 0 font ",9"
plot "$data" using 0:2:(\$4 > 0 ? 0x2a7ab0 : 0xa8a8a8):xtic(1) with boxes lc rgb variable, \
     "" using 0:2:(sprintf("%.2f", \$2)) with labels offset 0,0.7 font ",9", \
     1 with lines dt 2 lc rgb "black"
set ylabel "x_cpu: CPU per round trip vs baseline\n(lower is better)"
plot "$data" using 0:3:(\$4 > 0 ? 0xd08030 : 0xa8a8a8):xtic(1) with boxes lc rgb variable, \
     "" using 0:3:(sprintf("%.2f", \$3)) with labels offset 0,0.7 font ",9", \
     1 with lines dt 2 lc rgb "black"
unset multiplot
EOF
[ -s "$out" ] || { echo "plot.sh: gnuplot wrote nothing" >&2; exit 1; }
