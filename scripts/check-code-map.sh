#!/usr/bin/env bash
# Every module is named in ARCHITECTURE.md's code map (the section from
# "## Code map" to the next "## " heading), so the map cannot silently
# fall behind the code. Prints each missing file; exits 1 if any.
#
# Modules: every .rs file under src/, proto/src/, loadgen/src/,
# kmsctl/src/ and policy/src/, except generated code
# (proto/src/generated/). A file is named when the code map contains, as a whole word, any of:
#   - its path from the repository root: src/service/loader.rs
#   - its path inside its crate's src/: service/loader.rs
#   - either of those without ".rs": src/service/loader, service/loader
#   - for a mod.rs, its directory with a trailing slash: src/service/,
#     service/
#   - for a crate root (lib.rs, main.rs), the crate's directory with a
#     trailing slash (proto/, loadgen/, kmsctl/, policy/) or its root path
#     (src/lib.rs, src/main.rs)
#   - for a file directly in a crate's src/, its module name in backticks:
#     `frame` names proto/src/frame.rs, `config` src/config.rs (a nested
#     module needs its path: `service/loader.rs`)
set -euo pipefail
cd "$(dirname "$0")/.."
map=$(awk '/^## Code map/{on=1; next} on && /^## /{exit} on' ARCHITECTURE.md)
if [ -z "$map" ]; then
  echo "check-code-map: ARCHITECTURE.md has no \"## Code map\" section" >&2
  exit 1
fi
# The map is given to grep as a here-string, not through a pipe: grep -q
# exits at its first match, and under pipefail a writer cut off by that
# (SIGPIPE, once the map is longer than one write) would fail the test.
# A candidate is found when it is not preceded by a path or word
# character (so "service/loader.rs" does not name "src/loader.rs" by
# accident); what follows it may be anything but a word character.
named() {
  local c=$1
  case "$c" in
    */*) ;;
    *) grep -qF "\`$c\`" <<<"$map"; return ;;
  esac
  grep -qE "(^|[^A-Za-z0-9_/.-])$(printf '%s' "$c" | sed 's/[.[\*^$/]/\\&/g')([^A-Za-z0-9_]|$)" <<<"$map"
}
missing=0
while IFS= read -r f; do
  case "$f" in
    proto/src/*) crate=proto/ ; rel=${f#proto/src/} ;;
    loadgen/src/*) crate=loadgen/ ; rel=${f#loadgen/src/} ;;
    kmsctl/src/*) crate=kmsctl/ ; rel=${f#kmsctl/src/} ;;
    policy/src/*) crate=policy/ ; rel=${f#policy/src/} ;;
    src/*) crate="" ; rel=${f#src/} ;;
  esac
  cands=("$f" "$rel" "${f%.rs}" "${rel%.rs}")
  case "$rel" in
    */mod.rs) d=${rel%mod.rs}; cands+=("$d" "${f%mod.rs}") ;;
    lib.rs|main.rs) [ -n "$crate" ] && cands+=("$crate") ;;
  esac
  ok=0
  for c in "${cands[@]}"; do
    # A bare "lib" or "main" names nothing.
    case "$c" in lib|main|lib.rs|main.rs) continue ;; esac
    if named "$c"; then ok=1; break; fi
  done
  if [ $ok = 0 ]; then
    echo "not in ARCHITECTURE.md's code map: $f"
    missing=$((missing + 1))
  fi
done < <(git ls-files --cached --others --exclude-standard -- 'src/*.rs' 'proto/src/*.rs' 'loadgen/src/*.rs' 'kmsctl/src/*.rs' 'policy/src/*.rs' \
  | grep -v '^proto/src/generated/' | sort)
if [ $missing -gt 0 ]; then
  echo "check-code-map: $missing module(s) missing from ARCHITECTURE.md's code map" >&2
  exit 1
fi
echo "check-code-map: every module is in ARCHITECTURE.md's code map"
