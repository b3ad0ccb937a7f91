#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time (or, as 50000x, number of inputs) each
# (default 60s); fails on a finding.
# Targets are found by listing the `func FuzzXxx(` declarations in each package's _test.go files,
# so new ones are picked up without editing this script; among them FuzzIn and FuzzCompile
# (daemon/filter), FuzzApply (daemon/netmap), FuzzPlan (daemon/dataplane), FuzzRequest (ipc),
# FuzzHandle and FuzzUpstreamResponse (daemon/dns) and FuzzRead (daemon/dns/intercept).
# An optional second argument, an extended regexp, keeps only the "package target" lines that
# match it, e.g.: scripts/fuzz.sh 10s 'daemon/dns|daemon/filter'
#
# Each package's instrumented test binary is built once and run for each of its targets (CI runs
# this at 50,000 inputs per target, so a link per target would cost as much as the fuzzing). A finding is
# written to the package's testdata/fuzz/TARGET, as `go test -fuzz` does; commit it with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-60s}
only=${2:-}
cache="$(go env GOCACHE)/fuzz"
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
n=0
start=$SECONDS
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  targets=()
  for target in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(' "$dir"/*_test.go 2>/dev/null | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/' | sort -u); do
    if [ -n "$only" ] && ! grep -qE -- "$only" <<<"$pkg $target"; then
      continue
    fi
    targets+=("$target")
  done
  [ ${#targets[@]} -eq 0 ] && continue
  bin="$bins/$(basename "$dir").$n.test"
  go test -c -fuzz="^${targets[0]}\$" -o "$bin" "$pkg"
  for target in "${targets[@]}"; do
    echo "== $pkg $target ($t)"
    # Run from the package directory: the seed corpus is testdata/fuzz/TARGET there.
    (cd "$dir" && "$bin" -test.run='^$' -test.fuzz="^${target}\$" -test.fuzztime="$t" -test.fuzzcachedir="$cache")
    n=$((n + 1))
  done
done
if [ "$n" -eq 0 ]; then
  echo "no fuzz target found${only:+ matching $only}" >&2
  exit 1
fi
echo "== $n fuzz targets, $t each: no findings ($((SECONDS - start)) s)"
