#!/usr/bin/env bash
# Profiles one case of the performance report with perf (call graphs through DWARF).
#
#   scripts/profile.sh CASE N [SECONDS]     e.g. scripts/profile.sh file 1
#
# CASE: raw | blackhole | raw-file | file | close (benches/profile.rs); N dispatchers.
# Writes target/profile/CASE-N.data and prints the top of `perf report` (self time, by
# symbol, all threads) and the same split by thread name.
set -euo pipefail
case_name=${1:?CASE}; n=${2:?N}; seconds=${3:-10}
cd "$(dirname "$0")/.."
export CARGO_PROFILE_BENCH_DEBUG=line-tables-only
cargo bench --bench profile --no-run >/dev/null 2>&1
bin=$(cargo bench --bench profile --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
mkdir -p target/profile
data=target/profile/$case_name-$n.data
perf record -q -F 999 --call-graph dwarf,16384 -o "$data" -- "$bin" "$case_name" "$n" "$seconds"
echo "## self time by symbol"
perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "## by thread"
perf report -i "$data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -20
