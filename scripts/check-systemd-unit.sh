#!/usr/bin/env bash
# Checks dist/systemd/kmsd.service with systemd's own tools: `systemd-analyze
# verify` (directives, sections, the ExecStart binary; any warning fails the
# check, since verify itself exits 0 on an unknown key) and `systemd-analyze
# security --offline` (the sandbox's exposure score must stay "SAFE"-ish,
# at most 2.0 of 10). Needs no running systemd: the unit is checked as a
# file, with the binary paths pointed at a stand-in executable.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-systemd-unit: installing systemd (for systemd-analyze)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$tmp/kmsd"
chmod 755 "$tmp/kmsd"
sed "s#/usr/bin/kmsd#$tmp/kmsd#g" dist/systemd/kmsd.service >"$tmp/kmsd.service"
out=$(cd "$tmp" && systemd-analyze verify "$tmp/kmsd.service" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "check-systemd-unit: systemd-analyze verify warned:" >&2
  echo "$out" >&2
  exit 1
fi
systemd-analyze security --offline=true --threshold=20 --no-pager "$tmp/kmsd.service" | tail -1
echo "check-systemd-unit: dist/systemd/kmsd.service verified"
