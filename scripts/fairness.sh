#!/usr/bin/env bash
# Fairness under a flood (docs/perf/fairness.md): a well-behaved uid's
# latency and throughput alone, and while another uid floods the daemon at
# ten times its quota, in alternated rounds against one release kmsd.
#
#   scripts/fairness.sh [ROUNDS]      (default 3; needs root and release
#                                      builds of kmsd and kms-loadgen)
#
# The flooder (uid 2001) has a cryptographic quota of 20,000 items a second
# and sends 200,000 (open loop, batches of 10 at 20,000 frames a second);
# the victim (uid 2002, default quota) sends GenerateDataKey at 10,000
# requests a second, open loop, so its latency counts from each request's
# intended send time. Each run's JSON summary is kept in target/fairness/.
# FAIRNESS_CONFIG (TOML) is appended to the daemon's config, e.g.
# FAIRNESS_CONFIG=$'[audit]\nenabled = false' to see what the audit log
# adds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=$PWD/target/release
[ "$(id -u)" = 0 ] || { echo "fairness: needs root (runs the load as uids 2001 and 2002)" >&2; exit 1; }
for b in kmsd kms-loadgen; do
  [ -x "$bin/$b" ] || { echo "fairness: build first: cargo build --release -p kmsd -p kms-loadgen" >&2; exit 1; }
done
out=$PWD/target/fairness
rm -rf "$out"
mkdir -p "$out"
dir=$(mktemp -d /tmp/kmsd-fairness.XXXXXX)
kmsd_pid=""
cleanup() {
  [ -n "$kmsd_pid" ] && kill "$kmsd_pid" 2>/dev/null && wait "$kmsd_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -m 700 "$dir/s"
mkdir -m 777 "$dir/out"
cat >"$dir/kmsd.toml" <<CONF
[transport]
socket_mode = 0o666

[access]
key_creators = ["uid:2001", "uid:2002"]

[quotas]
profile = "kmsd"

# The flooder: 20,000 cryptographic items a second.
[[quotas.limit]]
principal = "uid:2001"
class = "cryptographic"
rate = 20000.0
burst = 2000.0

${FAIRNESS_CONFIG:-}
CONF
socket=$dir/s/kmsd.sock
KMSD_LOG=warn "$bin/kmsd" serve --socket "$socket" --data-dir "$dir/data" \
  --config "$dir/kmsd.toml" 2>"$dir/kmsd.log" &
kmsd_pid=$!
for _ in $(seq 200); do [ -S "$socket" ] && break; sleep 0.05; done
[ -S "$socket" ] || { cat "$dir/kmsd.log" >&2; exit 1; }
# Others may reach the socket by its path (kmsd checked its directory).
chmod 711 "$dir" "$dir/s"

as() { local uid=$1; shift; setpriv --reuid "$uid" --regid "$uid" --clear-groups "$@"; }
victim() {
  as 2002 "$bin/kms-loadgen" --socket "$socket" --op generate-data-key --keys 4 \
    --rate 10000 --connections 2 --duration 10 --warmup 2 --quiet --json "$dir/out/$1.json" >/dev/null
}
flood() {
  as 2001 "$bin/kms-loadgen" --socket "$socket" --op generate-data-key --keys 4 \
    --batch 10 --rate 20000 --connections 2 --duration 13 --warmup 0 --quiet --json "$dir/out/$1.json" >/dev/null
}
for r in $(seq "$rounds"); do
  victim "alone-$r"
  flood "flood-$r" &
  flood_pid=$!
  sleep 0.5
  victim "flooded-$r"
  wait "$flood_pid"
done
cp "$dir"/out/*.json "$out"/
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(f"{out}/{name}.json"))["runs"][0]
def med(xs):
    return statistics.median(xs)
alone = [load(f"alone-{r}") for r in range(1, rounds + 1)]
flooded = [load(f"flooded-{r}") for r in range(1, rounds + 1)]
floods = [load(f"flood-{r}") for r in range(1, rounds + 1)]
for name, runs in (("victim alone", alone), ("victim flooded", flooded)):
    print(f"{name:15} throughput {med([x['throughput_ops_per_sec'] for x in runs]):>10,.0f} ops/s  "
          f"p50 {med([x['latency_us']['p50'] for x in runs]):>7.1f} us  "
          f"p99 {med([x['latency_us']['p99'] for x in runs]):>7.1f} us  "
          f"errors {sum(sum(x['errors'].values()) for x in runs)}")
f_ops = med([x['throughput_ops_per_sec'] for x in floods])
f_thr = med([x['throttled'] / x['duration_secs'] for x in floods])
print(f"flooder         offered {f_ops:>10,.0f} items/s, throttled {f_thr:>10,.0f}/s, allowed {f_ops - f_thr:>8,.0f}/s")
p99 = med([f['latency_us']['p99'] / a['latency_us']['p99'] for a, f in zip(alone, flooded)])
thr = med([f['throughput_ops_per_sec'] / a['throughput_ops_per_sec'] for a, f in zip(alone, flooded)])
print(f"victim flooded/alone: p99 x{p99:.2f} (goal <= 3), throughput x{thr:.3f} (goal >= 0.90)")
PY
