#!/usr/bin/env bash
# Draws bench/run.sh's table as a PNG bar chart with gnuplot: requests/s of
# each setup, labelled with its ratio to plain nginx.
#   bash bench/chart.sh [RESULTS_TSV [PNG]]
# (defaults: bench/results.tsv and bench/results.png; run.sh writes the TSV
# when BENCH_OUT is set, and then calls this script itself)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TSV=${1:-$BENCH_DIR/results.tsv}
PNG=${2:-$BENCH_DIR/results.png}

command -v gnuplot >/dev/null 2>&1 \
    || { echo "chart.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
[ -s "$TSV" ] || { echo "chart.sh: no data in $TSV" >&2; exit 1; }

gnuplot <<GNUPLOT
set terminal pngcairo size 1100,560 font "sans,10"
set output "$PNG"
set datafile separator "\t"
set title "nginx rate limiting, one run of bench/run.sh: requests/s, labelled with the ratio to plain nginx" noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.8
set ylabel "requests/s (median of rounds)"
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set grid ytics
set xtics rotate by -25 left noenhanced
set key off
set bmargin 8
set rmargin 10
plot "$TSV" using 3:xtic(2) every ::1 linecolor rgb "#4a7ab0", \
     "" using (\$0):3:(sprintf("%.2f", \$6)) every ::1 \
        with labels offset 0,0.8 notitle
GNUPLOT
echo "chart.sh: wrote $PNG"
