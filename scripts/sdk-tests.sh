#!/usr/bin/env bash
# kmsd driven by the real AWS SDK for Rust (aws-sdk-kms) over its HTTP API's
# Unix socket and its loopback TCP listener with SigV4: the tests in
# clients/rust-sdk/ (docs/aws-sdk-rust.md).
#
# clients/rust-sdk is a crate of its own, outside the workspace (its
# dependency graph, the SDK's, would add duplicate versions to the
# workspace's and slow every build), with its own committed Cargo.lock and
# its own target directory, target/sdk-tests. It does not link kmsd: its
# tests start the kmsd binary named by KMSD_BIN.
#
#   scripts/sdk-tests.sh                # builds target/debug/kmsd if needed
#   KMSD_BIN=target/debug/kmsd scripts/sdk-tests.sh   # that binary, no build (CI)
#   scripts/sdk-tests.sh throttling     # arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -n "${KMSD_BIN:-}" ]; then
  case $KMSD_BIN in /*) ;; *) KMSD_BIN="$root/$KMSD_BIN" ;; esac
  if [ ! -x "$KMSD_BIN" ]; then
    echo "sdk-tests: KMSD_BIN=$KMSD_BIN is not an executable" >&2
    exit 1
  fi
else
  # A no-op when the debug binary is up to date.
  cargo build --locked -p kmsd --bin kmsd
  KMSD_BIN="$root/target/debug/kmsd"
fi
export KMSD_BIN

cd clients/rust-sdk
export CARGO_TARGET_DIR="$root/target/sdk-tests"
cargo fmt -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked "$@"
