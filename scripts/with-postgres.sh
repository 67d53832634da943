#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server: `initdb` in a temporary
# directory, the server listening only on a Unix socket in that directory (no TCP),
# trust authentication for the `postgres` superuser, durability off (the data is thrown
# away). The command gets the server as HEALTHPULL_TEST_POSTGRES_URL; the server is
# stopped and its directory removed when the command ends, however it ends.
#
#   scripts/with-postgres.sh cargo test --test integration store::
#
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user
# (created by Debian's package; `nobody` where it is missing), otherwise as the calling
# user. The binaries are the
# newest of /usr/lib/postgresql/<version>/bin (Debian's layout), or the directory given
# in HEALTHPULL_PG_BIN, or the `initdb` and `pg_ctl` on the PATH; scripts/test-env.sh
# installs them.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

# The directory holding initdb, pg_ctl and postgres of one version.
pg_bin_dir() {
  local dir
  if [ -n "${HEALTHPULL_PG_BIN:-}" ]; then
    echo "$HEALTHPULL_PG_BIN"
    return
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -n -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return
    fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return
  fi
  return 1
}

bin=$(pg_bin_dir) || {
  echo "with-postgres: no PostgreSQL server binaries (initdb, pg_ctl): run scripts/test-env.sh" >&2
  exit 1
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/healthpull-pg.XXXXXX")
as_server=()
if [ "$(id -u)" = 0 ]; then
  # Debian's package creates `postgres`; without it, the unprivileged `nobody`.
  server_user=postgres
  id "$server_user" >/dev/null 2>&1 || server_user=nobody
  chown "$server_user:" "$dir"
  as_server=(runuser -u "$server_user" --)
fi
chmod 700 "$dir"

stop_server() {
  "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop_server EXIT
trap 'exit 130' INT TERM HUP

"${as_server[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
  --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
options="-c listen_addresses='' -c unix_socket_directories='$dir' -c port=5432"
options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
options+=" -c max_connections=300 -c shared_buffers=64MB"
"${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "$options" start >/dev/null || {
  cat "$dir/server.log" >&2
  exit 1
}
export HEALTHPULL_TEST_POSTGRES_URL="postgresql:///postgres?host=$dir&port=5432&user=postgres"
echo "with-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $dir" >&2

status=0
"$@" || status=$?
exit "$status"
