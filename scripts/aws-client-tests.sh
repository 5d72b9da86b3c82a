#!/usr/bin/env bash
# AWS's own Python clients against kmsd: boto3 and the AWS CLI (awscli from
# PyPI), at the pinned versions of tests/aws-clients/requirements.txt,
# drive the real daemon over its loopback TCP listener with SigV4
# (tests/aws-clients/, docs/aws-clients.md).
#
# - Python: `python3` if it is 3.10 or newer and can make a venv, else
#   Debian's (apt-get installs python3 and python3-venv, which carries
#   ensurepip, when missing).
# - One venv, target/aws-clients-venv (under CARGO_TARGET_DIR if set),
#   reused while its stamp (the requirements file's hash and the
#   interpreter) matches, else made anew. boto3 and awscli share it:
#   awscli 1.46 carries its own botocore, so each has the botocore it was
#   released with (requirements.txt says more). Wheels only, no sdist is
#   built; after the install the venv must hold exactly the pinned
#   packages.
# - kmsd: KMSD_BIN, else target/debug/kmsd, built (debug) if missing. An
#   existing binary is used as it is: run `cargo build -p kmsd` first after
#   changing the daemon.
# - The tests: `python -m unittest -v` in tests/aws-clients, under a
#   15-minute timeout, with TMPDIR a directory of this run's that is
#   removed at the end (the tests remove their own; this catches the rest).
#   Arguments are passed to unittest (e.g. `test_sigv4` or `-k region`).
#
# Exits non-zero on any failure; in CI (CI=true) a skipped test is a
# failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
start=$SECONDS
log() { echo "aws-client-tests: $* ($((SECONDS - start)) s)" >&2; }

requirements=$repo/tests/aws-clients/requirements.txt
target=${CARGO_TARGET_DIR:-$repo/target}
venv=$target/aws-clients-venv

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=sudo; else
      echo "aws-client-tests: need root (or sudo) to apt-get install: $*" >&2
      exit 1
    fi
  fi
  log "installing $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# ------------------------------------------------------------------ Python
usable() { # interpreter: 3.10+ with venv and ensurepip (Debian splits it off)
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}
python=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && usable "$p"; then
    python=$(command -v "$p")
    break
  fi
done
if [ -z "$python" ]; then
  apt_install python3 python3-venv
  python=/usr/bin/python3
  if ! usable "$python"; then
    echo "aws-client-tests: $python is not Python 3.10+ with venv ($("$python" --version 2>&1))" >&2
    exit 1
  fi
fi

# -------------------------------------------------------------------- venv
stamp="requirements $(sha256sum "$requirements" | cut -d' ' -f1); python $python $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$venv/kmsd-stamp" ] && [ "$(cat "$venv/kmsd-stamp")" = "$stamp" ] &&
  "$venv/bin/python" -c 'import boto3' 2>/dev/null && [ -x "$venv/bin/aws" ]; then
  log "reusing $venv"
else
  log "creating $venv with $python ($("$python" --version 2>&1))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r "$requirements"
  # Exactly the pinned set: an unpinned dependency would make runs differ.
  normalize() { tr 'A-Z_' 'a-z-' | sort; }
  want=$(grep -E '^[A-Za-z]' "$requirements" | normalize)
  have=$("$venv/bin/python" -m pip freeze --disable-pip-version-check | normalize)
  if [ "$want" != "$have" ]; then
    echo "aws-client-tests: the venv differs from $requirements:" >&2
    diff <(echo "$want") <(echo "$have") >&2 || true
    exit 1
  fi
  echo "$stamp" >"$venv/kmsd-stamp"
  log "installed $(grep -cE '^[A-Za-z]' "$requirements") pinned packages"
fi

# -------------------------------------------------------------------- kmsd
export KMSD_BIN=${KMSD_BIN:-$target/debug/kmsd}
if [ ! -x "$KMSD_BIN" ]; then
  log "building kmsd (debug)"
  cargo build --locked -p kmsd
fi

# ------------------------------------------------------------------- tests
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-aws-clients-run.XXXXXX")
trap 'rm -rf "$run_tmp"' EXIT
log "kmsd $KMSD_BIN; $("$venv/bin/python" -c 'import boto3, botocore; print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}")'); $("$venv/bin/aws" --version 2>&1)"
status=0
(
  cd tests/aws-clients
  TMPDIR=$run_tmp PYTHONDONTWRITEBYTECODE=1 timeout 900 \
    "$venv/bin/python" -m unittest -v "$@"
) 2>&1 | tee "$run_tmp/unittest.log" || status=$?
if [ "$status" -ne 0 ]; then
  log "FAILED"
  exit "$status"
fi
if grep -qE '^Ran 0 tests' "$run_tmp/unittest.log"; then
  log "no test ran"
  exit 1
fi
if [ "${CI:-}" = "true" ] && grep -qE '^OK \(.*skipped=' "$run_tmp/unittest.log"; then
  log "tests were skipped (the daemon or the CLI was missing)"
  exit 1
fi
log "passed"
