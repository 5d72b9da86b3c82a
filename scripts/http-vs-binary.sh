#!/usr/bin/env bash
# Single-operation GenerateDataKey over the HTTP API against the binary
# protocol (docs/perf/http.md): closed loop, each connections x pipeline
# setting run with both protocols back to back, ROUNDS times, each run
# against a fresh `--spawn`ed release kmsd (default config: audit log,
# quotas and metrics on). Prints medians per setting as a Markdown table.
#
#   scripts/http-vs-binary.sh [ROUNDS] [SETTINGS] [-- extra kms-loadgen args]
#
# ROUNDS defaults to 3; SETTINGS to "2:1 2:8 2:32 4:1 4:8 4:32 16:8"
# (connections:pipeline). Extra arguments go to every run, e.g.
# `-- --config noaudit.toml` with `[audit] enabled = false` to see what the
# audit log's hand-off costs each protocol. Each run's JSON summary is kept
# in target/http-vs-binary/. Needs release builds of kmsd and kms-loadgen.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
settings=${2:-"2:1 2:8 2:32 4:1 4:8 4:32 16:8"}
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift
out=target/http-vs-binary
rm -rf "$out" && mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for s in $settings; do
    c=${s%:*} p=${s#*:}
    for proto in binary http; do
      target/release/kms-loadgen --spawn --protocol "$proto" --op generate-data-key \
        --batch 1 --keys 16 --connections "$c" --pipeline "$p" --duration 5 --warmup 1 \
        --quiet --json "$out/$proto-c$c-p$p-r$round.json" "$@" >/dev/null 2>>"$out/stderr.log"
    done
  done
done
python3 - "$out" <<'PY'
import collections, glob, json, re, statistics, sys
runs = collections.defaultdict(list)
for f in glob.glob(sys.argv[1] + "/*.json"):
    m = re.search(r"(binary|http)-c(\d+)-p(\d+)-r\d+\.json$", f)
    runs[(int(m[2]), int(m[3]), m[1])].append(json.load(open(f))["runs"][0])
med = statistics.median
print("| conns x pipeline | protocol | req/s (median) | runs | p50 µs | p99 µs | daemon cores | daemon µs/req | loadgen cores |")
print("|---|---|---|---|---|---|---|---|---|")
rate = {}
for k in sorted(runs):
    rs = runs[k]
    rate[k] = med([r["requests_per_sec"] for r in rs])
    each = ", ".join(f"{r['requests_per_sec'] / 1e3:.0f}k" for r in sorted(rs, key=lambda r: r["requests_per_sec"]))
    cpu = [r["target_process"]["cpu_secs"] * 1e6 / max(r["requests"], 1) for r in rs]
    print(f"| {k[0]} x {k[1]} | {k[2]} | {rate[k]:,.0f} | {each} | "
          f"{med([r['latency_us']['p50'] for r in rs]):,.0f} | {med([r['latency_us']['p99'] for r in rs]):,.0f} | "
          f"{med([r['target_process']['cores'] for r in rs]):.2f} | {med(cpu):.1f} | "
          f"{med([r['loadgen']['cores'] for r in rs]):.2f} |")
    errors = sum(sum(r["errors"].values()) for r in rs)
    if errors:
        print(f"| | errors: {errors} | | | | | | | |")
print()
for (c, p, proto), v in sorted(rate.items()):
    if proto == "http":
        print(f"http/binary at {c} x {p}: {v / rate[(c, p, 'binary')]:.2f}")
best = {pr: max(v for k, v in rate.items() if k[2] == pr) for pr in ("binary", "http")}
print(f"best http / best binary: {best['http']:,.0f} / {best['binary']:,.0f} = {best['http'] / best['binary']:.2f}")
PY
