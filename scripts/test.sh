#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (the Rust crates
# through cargo, a Python venv with igor-iot 0.99.1 and python-fitbit 0.3.1, Debian's
# chromium, chromium-driver and postgresql), then runs every test beside a throwaway
# PostgreSQL server (scripts/with-postgres.sh) and prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-env.sh
# Only what the tests run: the library, the binary and the integration tests.
cargo test --locked --no-run
# Which day a time lands on depends on the machine's zone when no user zone is set:
# the suite runs in UTC wherever it runs (tests about zones set their own).
export TZ=UTC
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
scripts/with-postgres.sh cargo test --locked --no-fail-fast -- --test-threads 2 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
