#!/usr/bin/env bash
# Installs the system packages the build and the tests need (Debian/Ubuntu):
# cmake and g++ build the vendored flatc that checks the generated protocol
# code; softhsm2 is the PKCS#11 token the HSM tests run against (and
# softhsm2-util makes their throwaway token); opensc brings pkcs11-tool to
# inspect tokens; libssl-dev and pkg-config let the openssl crate link the
# system's OpenSSL (RSA for imports of key material), and the openssl
# command line wraps key material in the import tests, as AWS's docs do. Safe to run repeatedly: it installs only what is missing.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v cc >/dev/null 2>&1 || need+=(gcc)
softhsm_module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so; do
  if [ -e "$m" ]; then softhsm_module=$m; break; fi
done
if [ -z "$softhsm_module" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
  need+=(softhsm2)
fi
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need+=(libssl-dev); fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-deps: need root (or sudo) to apt-get install: ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
