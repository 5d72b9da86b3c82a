#!/usr/bin/env bash
# The test command: installs what the suite needs, then runs every test of the
# workspace (unit, protocol, service in-process, end to end over real sockets
# with the real binaries, and the PKCS#11 root against a real SoftHSM2 token).
#
# The HSM tests get a throwaway SoftHSM2 token: a temporary SOFTHSM2_CONF
# whose token directory is removed on exit, and these variables for the
# tests (tests/integration/hsm.rs):
#   KMSD_TEST_PKCS11_MODULE  the PKCS#11 module
#   KMSD_TEST_TOKEN_LABEL    the token's label
#   KMSD_TEST_PIN            its user PIN (random per run; tests write it to
#                            0600 files, kmsd never takes a PIN on argv)
# In CI (CI=true) KMSD_REQUIRE_HSM=1 makes a missing module a failure
# instead of a note.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

if [ "${CI:-}" = "true" ]; then
  export KMSD_REQUIRE_HSM=1
fi

module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so; do
  if [ -e "$m" ]; then module=$m; break; fi
done
if [ -n "$module" ] && command -v softhsm2-util >/dev/null 2>&1; then
  hsm_dir=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-softhsm.XXXXXX")
  trap 'rm -rf "$hsm_dir"' EXIT
  mkdir -m 700 "$hsm_dir/tokens"
  cat >"$hsm_dir/softhsm2.conf" <<CONF
directories.tokendir = $hsm_dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  export SOFTHSM2_CONF="$hsm_dir/softhsm2.conf"
  export KMSD_TEST_PKCS11_MODULE="$module"
  export KMSD_TEST_TOKEN_LABEL="kmsd-test"
  KMSD_TEST_PIN="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  export KMSD_TEST_PIN
  so_pin="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  softhsm2-util --init-token --free --label "$KMSD_TEST_TOKEN_LABEL" \
    --so-pin "$so_pin" --pin "$KMSD_TEST_PIN" >/dev/null
  echo "test: throwaway SoftHSM2 token \"$KMSD_TEST_TOKEN_LABEL\" in $hsm_dir/tokens ($module)" >&2
elif [ "${KMSD_REQUIRE_HSM:-}" = "1" ]; then
  echo "test: KMSD_REQUIRE_HSM=1 but SoftHSM2 is not installed (scripts/install-deps.sh)" >&2
  exit 1
else
  echo "test: NOTE: SoftHSM2 not found; the HSM tests will print a note and not run" >&2
fi

cargo test --workspace --all-features --locked "$@"
