#!/usr/bin/env bash
# Proves that schema/kms.fbs generates working code for other languages with
# any flatc from 2.x on: Python and C++ code is generated with Debian's flatc
# (2.0.8) and with the vendored flatc 23.5.26 (the one behind the Rust code),
# and for each of the four:
#
#   Rust encoder  --response frames-->  Python / C++  (every field checked)
#   Python / C++  --request frames--->  kms_proto::decode_request (checked)
#
# The expected values live in scripts/tools/interop.rs (Rust side),
# scripts/portability/interop.py and scripts/portability/interop.cpp.
# Installs what it needs (Debian: flatbuffers-compiler, libflatbuffers-dev,
# python3-flatbuffers; cmake and g++ via scripts/install-deps.sh). Exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
start=$SECONDS
log() { echo "schema-portability: $* ($((SECONDS - start)) s)" >&2; }

# ------------------------------------------------------------ dependencies
scripts/install-deps.sh
pkgs=()
for p in flatbuffers-compiler libflatbuffers-dev python3-flatbuffers; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  log "installing ${pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
python=/usr/bin/python3 # the interpreter Debian's python3-flatbuffers is for
debian_flatc=/usr/bin/flatc

# The Rust helpers: a standalone package with the main Cargo.lock's versions
# (cargo prunes the copy) sharing the main target directory, so the vendored
# flatc the tests built is reused.
cp Cargo.lock scripts/tools/Cargo.lock
target=${CARGO_TARGET_DIR:-$repo/target}
CARGO_TARGET_DIR=$target cargo build --quiet --manifest-path scripts/tools/Cargo.toml \
  --features interop --bins
interop=$target/debug/kms-interop
vendored_flatc=$("$target/debug/kms-flatc-path")
# The flatc crate installs the headers of the same flatbuffers next to bin/.
vendored_include=$(dirname "$(dirname "$vendored_flatc")")/include
[ -f "$vendored_include/flatbuffers/flatbuffers.h" ] || {
  echo "schema-portability: no flatbuffers headers at $vendored_include" >&2
  exit 1
}
log "tools ready"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$interop" write-responses "$tmp/responses.bin"

# ------------------------------------------------- per flatc: Python, C++
check_with() { # name flatc include-dir-or-empty
  local name=$1 flatc=$2 include=$3 dir=$tmp/$1
  mkdir -p "$dir/py" "$dir/cpp"
  log "$name: $("$flatc" --version)"
  "$flatc" --python -o "$dir/py" schema/kms.fbs
  "$flatc" --cpp -o "$dir/cpp" schema/kms.fbs

  "$python" scripts/portability/interop.py "$dir/py" "$tmp/responses.bin" "$dir/python-requests.bin"
  "$interop" check-requests "$dir/python-requests.bin" "Python code from $name flatc"

  local inc=(-I "$dir/cpp")
  if [ -n "$include" ]; then inc+=(-I "$include"); fi
  g++ -std=c++17 -O1 -Wall -Wextra -Werror "${inc[@]}" scripts/portability/interop.cpp \
    -o "$dir/interop-cpp"
  "$dir/interop-cpp" "$tmp/responses.bin" "$dir/cpp-requests.bin"
  "$interop" check-requests "$dir/cpp-requests.bin" "C++ code from $name flatc"
  log "$name: Python and C++ interoperate with kms-proto"
}

# Debian's flatc with Debian's headers (/usr/include) and Python runtime.
check_with debian "$debian_flatc" ""
# The vendored flatc with its own headers (the generated C++ insists on the
# exact version) and the same Python runtime.
check_with vendored "$vendored_flatc" "$vendored_include"
log "ok"
