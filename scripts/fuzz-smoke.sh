#!/usr/bin/env bash
# A short fuzzing run of the protocol decoders and the key policy parser
# (CI): builds the cargo-fuzz targets in fuzz/ and runs each for
# FUZZ_SECONDS (default 30) seconds, starting from the committed seeds
# (fuzz/seeds/<target>) and the local corpus (fuzz/corpus/<target>, not
# committed). Exits non-zero on any crash, panic,
# timeout, leak or out-of-memory; the input that caused it is saved under
# fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` in fuzz/).
#
#   scripts/fuzz-smoke.sh       # frame_decode, policy_parse_eval, grant_compile_allows and http_json_decode, 30 s each
#   FUZZ_SECONDS=300 FUZZ_TARGETS="frame_decode request_decode response_decode" scripts/fuzz-smoke.sh
#
# cargo-fuzz needs nightly-only rustc flags (-Z sanitizer=..., coverage
# instrumentation); RUSTC_BOOTSTRAP=1 makes the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh # g++ builds libFuzzer
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-frame_decode policy_parse_eval grant_compile_allows http_json_decode}

# fuzz/Cargo.lock is not committed; start it from the main lock so that the
# protocol crate's dependencies have the versions the workspace tests.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

cd fuzz
for target in $targets; do
  [ -d "seeds/$target" ] || { echo "fuzz-smoke: no seeds for $target" >&2; exit 1; }
  mkdir -p "corpus/$target"
  echo "fuzz-smoke: $target for ${seconds}s" >&2
  # -timeout: an input taking over 10 s is a hang; -rss_limit_mb also bounds
  # single allocations (malloc_limit_mb defaults to it).
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz-smoke: no crashes" >&2
