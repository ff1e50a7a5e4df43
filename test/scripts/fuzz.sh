#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 60s).
# Crashers land in the package's testdata/fuzz/<Target>/ and fail the run;
# commit them as seeds once fixed.
set -euo pipefail
fuzztime=${1:-60s}
cd "$(dirname "$0")/../.."
found=0
while IFS= read -r line; do
  file=${line%%:*}
  target=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"${line#*:}")
  pkg=./$(dirname "$file")
  found=$((found+1))
  echo "== fuzz $pkg $target ($fuzztime)"
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
done < <(git ls-files --cached --others --exclude-standard '*_test.go' | xargs grep -H -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' || true)
echo "fuzz: $found target(s) run for $fuzztime each"
