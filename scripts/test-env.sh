#!/usr/bin/env bash
# Installs everything the test suite needs beside the Rust crates:
#   - .venv: Python 3.11 with igor-iot 0.99.1 (and the pins it needs to run today)
#     and python-fitbit 0.3.1, the library the old Igor plugin used;
#   - Debian's chromium and chromium-driver, for the setup-page browser tests;
#   - Debian's postgresql (server binaries under /usr/lib/postgresql/<version>/bin), for
#     the PostgreSQL store's tests, which scripts/with-postgres.sh runs beside a
#     throwaway server.
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

# Debian packages still missing.
packages=()
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  packages+=(chromium chromium-driver)
fi
# The server binaries: Debian keeps them off the PATH (its pg_ctlcluster wraps them).
postgres_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -n -r | head -1)
if [ -z "$postgres_bin" ] || [ ! -x "$postgres_bin/initdb" ] || [ ! -x "$postgres_bin/pg_ctl" ]; then
  packages+=(postgresql)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  else
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
postgres_version=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -n -r | head -1 | cut -d/ -f5)
echo "test-env: ready (.venv, $(chromium --version 2>/dev/null | head -1), PostgreSQL ${postgres_version:-missing})"
