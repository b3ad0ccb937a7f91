#!/usr/bin/env bash
# Runs the lab tests (root): the full -v log goes to lab-test.log; the console gets one line per
# test, the measured figures, and on failure the whole output of the failing tests.
set -uo pipefail
cd "$(dirname "$0")/.."
# 35m: about 17 min on main before issue 14 added tests that need minutes by nature (a 130 s
# stream across a rekey, a 3 min freeze, 100 restarts), about 5 more with two tests at a time.
go test -race -count=1 -timeout 35m -v ./tests/lab/ ./internal/lab/ > lab-test.log 2>&1
rc=$?
grep -E '^(--- |PASS|FAIL|ok|panic)|(MB .* in .*Mbit/s|direct again|direct via|reconnected|appeared|after the first ping|: RSS .* heap in use|allocated .* per cycle)' lab-test.log
if [ $rc -ne 0 ]; then
  echo "=== lab tests failed (exit $rc); output of the failing tests:"
  # Print every line of tests that failed: their names, then each line mentioning them or indented under them.
  for t in $(grep -oE -- '--- FAIL: [A-Za-z0-9_/]+' lab-test.log | awk '{print $3}' | sort -u); do
    echo "----- $t"
    awk -v t="$t" '
      /^(=== (RUN|CONT|NAME|PAUSE)|--- )/ { cur = ($0 ~ (" " t "( |$)")) }
      cur { print }
    ' lab-test.log | tail -n 300
  done
fi
exit $rc
