#!/usr/bin/env bash
# The test command: installs what the suite needs, then runs every test of the
# workspace (unit, protocol, service in-process, end to end over real sockets
# with the real binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --all-features --locked "$@"
