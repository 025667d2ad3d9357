#!/usr/bin/env bash
# bench.sh runs the performance benchmarks and writes them, with the machine
# they ran on, to bench.txt (benchstat reads it as is).
#   BENCH=regexp         which benchmarks (default: all)
#   BENCH_COUNT=n        runs of each, for benchstat (default 3)
#   FANOUT_SAMPLES=n     samples per fan-out run (flips, warm checks; default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
bench=${BENCH:-.}
count=${BENCH_COUNT:-3}
samples=${FANOUT_SAMPLES:-30}
out=bench.txt
{
	echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $($GO version)"
	echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') × $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
} >"$out"
# Fan-out benchmarks set up 1000 etcd clients, 1000 agents or 50 runtimes per run and
# report percentiles of their own samples, so they take a fixed number of
# iterations rather than letting the testing package scale b.N.
fanout='FlipToLastWatcher|WarmCheck|FlipToAllAcks|Shipper|RollbackEndToEnd'
$GO test -run '^$' -bench "$bench" -skip "$fanout" -benchmem -count "$count" -timeout 30m ./... | tee -a "$out"
for b in FlipToLastWatcher:./fleet/routing/ WarmCheck:./fleet/warm/ FlipToAllAcks:./fleet/runtime/ Shipper:./audit/ RollbackEndToEnd:./commands/; do
	name=${b%%:*} pkg=${b#*:}
	if [[ "$bench" == "." || "$name" =~ $bench ]]; then
		$GO test -run '^$' -bench "$name" -benchtime "${samples}x" -count "$count" -timeout 30m "$pkg" | tee -a "$out"
	fi
done
