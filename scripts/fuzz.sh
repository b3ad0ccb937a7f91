#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 60s); fails on a finding.
# Targets are found by listing the `func FuzzXxx(` declarations in each package's _test.go files,
# so new ones are picked up without editing this script; among them FuzzIn (daemon/filter),
# FuzzHandle and FuzzUpstreamResponse (daemon/dns) and FuzzRead (daemon/dns/intercept).
# An optional second argument, an extended regexp, keeps only the "package target" lines that
# match it, e.g.: scripts/fuzz.sh 10s 'daemon/dns|daemon/filter'
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-60s}
only=${2:-}
n=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(' "$dir"/*_test.go 2>/dev/null | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/' | sort -u); do
    if [ -n "$only" ] && ! grep -qE -- "$only" <<<"$pkg $target"; then
      continue
    fi
    echo "== $pkg $target ($t)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" "$pkg"
    n=$((n + 1))
  done
done
if [ "$n" -eq 0 ]; then
  echo "no fuzz target found${only:+ matching $only}" >&2
  exit 1
fi
echo "== $n fuzz targets, $t each: no findings"
