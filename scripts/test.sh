#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (the Rust crates
# through cargo, a Python venv with igor-iot 0.99.1 and python-fitbit 0.3.1, Debian's
# chromium and chromium-driver), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-env.sh
cargo build --locked --all-targets
cargo test --locked --no-fail-fast -- --test-threads 2
