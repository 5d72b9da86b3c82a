#!/usr/bin/env bash
# Regenerates proto/src/generated/kms_generated.rs from schema/kms.fbs.
#
# Uses the vendored flatc 23.5.26 (the `flatc` crate builds it from source
# with cmake and g++; the flatbuffers runtime is pinned to the same version).
# Never use a system flatc: Debian's 2.0.8 generates code for another runtime.
# The command is:
#
#   flatc --rust -o proto/src/generated schema/kms.fbs
#
# The integration test `protocol::generated_code_is_fresh` fails until the
# committed file equals this output.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

scripts/install-deps.sh
# scripts/tools is its own small workspace (it does not build the generated
# code, so this works even when that code is broken). It takes its dependency
# versions from the main Cargo.lock (cargo prunes the copy to what it needs)
# and shares the main target directory, so the flatc built for the tests is
# reused instead of being built again.
cp Cargo.lock scripts/tools/Cargo.lock
flatc=$(CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" \
  cargo run --quiet --manifest-path scripts/tools/Cargo.toml --bin kms-flatc-path)
version=$("$flatc" --version)
case "$version" in
  *" 23.5.26") ;;
  *) echo "codegen: expected flatc 23.5.26, got: $version" >&2; exit 1 ;;
esac

# Generate into a scratch directory and replace the committed file only when
# it differs, so that an up-to-date tree is not rebuilt.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$flatc" --rust -o "$tmp" schema/kms.fbs
out=proto/src/generated/kms_generated.rs
if cmp -s "$tmp/kms_generated.rs" "$out"; then
  echo "codegen: $out is up to date ($version)"
else
  cp "$tmp/kms_generated.rs" "$out"
  echo "codegen: rewrote $out ($version)"
fi
