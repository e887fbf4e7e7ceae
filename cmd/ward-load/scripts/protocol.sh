#!/bin/bash
# The load measurement of docs/benchmarks.md: 3 rounds, each running the
# baseline build (/tmp/ward-base, e.g. built from the merge base of the
# branch under test) and the current one (/tmp/ward) for both grants.
cd "$(dirname "$0")"
for r in 1 2 3; do
  for bin in /tmp/ward-base /tmp/ward; do
    for g in client_credentials refresh; do
      echo "=== round $r bin $bin grant $g"
      ./run.sh $bin $g 16 20s -json
    done
  done
done
