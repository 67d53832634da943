#!/usr/bin/env bash
# Installs everything the test suite needs beside the Rust crates:
#   - .venv: Python 3.11 with igor-iot 0.99.1 (and the pins it needs to run today)
#     and python-fitbit 0.3.1, the library the old Igor plugin used;
#   - Debian's chromium and chromium-driver, for the setup-page browser tests.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${HEALTHPULL_PYTHON:-python3}
pins=(igor-iot==0.99.1 Flask==2.2.5 Werkzeug==2.2.3 PyJWT==1.7.1 fitbit==0.3.1)

if ! .venv/bin/python -c 'import igor, fitbit, flask' 2>/dev/null; then
  version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  case "$version" in
    3.8|3.9|3.10|3.11) ;;
    *) echo "test-env: igor-iot 0.99.1 needs Python 3.8-3.11, $PY is $version (set HEALTHPULL_PYTHON)" >&2; exit 1 ;;
  esac
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "${pins[@]}"
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
echo "test-env: ready (.venv, $(chromium --version 2>/dev/null | head -1))"
