#!/usr/bin/env bash
# Whole-process server benchmark: USERS users fetched through `healthpull serve`
# (release build, embedded store) against the local fake provider.
#
# 1. `examples/fake_provider.rs` (the integration tests' fake as a process) grants
#    USERS users at the fake and writes the app registration and their tokens into a
#    fresh embedded store, then serves until killed;
# 2. `healthpull serve` runs under GNU time (`/usr/bin/time -v`) with the `fitbit` plugin
#    pointed at the fake;
# 3. one curl process fetches `/plugin/fitbit?user=uNNNN&methods=get_bodyweight&
#    base_date=2024-01-31&period=1m` for every user, PARALLEL transfers at a time;
#    every answer must be 200;
# 4. the server gets SIGTERM; GNU time reports its peak memory (maximum resident set
#    size) and CPU time.
#
# Prints wall time of the fetches, fetches per second, the server's peak RSS and CPU.
# Usage: benches/server-users.sh [USERS [PARALLEL]]     (defaults: 1000 16)
# `HEALTHPULL_BIN=path benches/server-users.sh` serves with that binary instead of this
# tree's release build (an older build, in the same session; the fake is still built here).
# Figures and how to read them: docs/BENCHMARKS.md, section "Server: 1,000 users".
set -euo pipefail

users="${1:-1000}"
parallel="${2:-16}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${HEALTHPULL_BIN:-$root/target/release/healthpull}"
fake_bin="$root/target/release/examples/fake_provider"

for tool in curl /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "server-users: $tool is missing" >&2; exit 1; }
done

echo "building the release binary and the fake provider" >&2
(cd "$root" && cargo build --release --quiet --bin healthpull --example fake_provider)

work="$(mktemp -d)"
fake_pid=""
time_pid=""
cleanup() {
    # Only the processes this script started, by their ids.
    if [ -n "$time_pid" ] && kill -0 "$time_pid" 2>/dev/null; then
        server_pid="$(ps -o pid= --ppid "$time_pid" | tr -d ' ' || true)"
        [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
        wait "$time_pid" 2>/dev/null || true
    fi
    if [ -n "$fake_pid" ] && kill -0 "$fake_pid" 2>/dev/null; then
        kill -TERM "$fake_pid" 2>/dev/null || true
        wait "$fake_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=support/wait_for.sh
. "$root/benches/support/wait_for.sh"
# shellcheck source=support/fake_fitbit.sh
. "$root/benches/support/fake_fitbit.sh"

# 1. The fake, with USERS users seeded into a fresh store.
db="$work/store/healthpull.db"
seed_start=$(date +%s.%N)
"$fake_bin" --users "$users" --store "$db" >"$work/fake.out" 2>"$work/fake.err" &
fake_pid=$!
wait_for "$work/fake.out" "listening on http://" 300
seed_end=$(date +%s.%N)
fake_url="$(sed -n 's/^fake provider listening on //p' "$work/fake.out")"

cat >"$work/healthpull.yaml" <<EOF
providers_dir: $root/providers
store:
  kind: embedded
  path: $db
lock_dir: $work/locks
$(fitbit_plugin "$fake_url")
EOF

# 2. The server under GNU time.
/usr/bin/time -v -o "$work/time.txt" \
    "$bin" --config "$work/healthpull.yaml" serve --listen 127.0.0.1:0 \
    >"$work/serve.out" 2>"$work/serve.err" &
time_pid=$!
wait_for "$work/serve.err" "healthpull listening on http://" 60
server_url="$(sed -n 's/^healthpull listening on //p' "$work/serve.err" | head -1)"
server_pid="$(ps -o pid= --ppid "$time_pid" | tr -d ' ')"

# 3. Every user once, PARALLEL at a time, from one curl process.
for ((i = 0; i < users; i++)); do
    printf 'url = "%s/plugin/fitbit?user=u%04d&methods=get_bodyweight&base_date=2024-01-31&period=1m"\noutput = "/dev/null"\n' \
        "$server_url" "$i"
done >"$work/urls.cfg"
start=$(date +%s.%N)
fetch_all "$work/urls.cfg" "$work/codes.txt" "$parallel" "$users" "$work/serve.err"
end=$(date +%s.%N)
# The fetches were stored: the status page lists every user with a last success.
stored=$(curl --silent "$server_url/plugin/fitbit/status" | grep -c '"last_success": "' || true)

# 4. Stop the server; GNU time reports on it.
kill -TERM "$server_pid"
wait "$time_pid" || true
time_pid=""

wall=$(echo "$end - $start" | bc -l)
seed=$(echo "$seed_end - $seed_start" | bc -l)
rss_kb=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$work/time.txt")
user_s=$(sed -n 's/^\s*User time (seconds): //p' "$work/time.txt")
sys_s=$(sed -n 's/^\s*System time (seconds): //p' "$work/time.txt")
db_kb=$(du -k "$db" | cut -f1)
printf 'users:                 %d (%d transfers at a time)\n' "$users" "$parallel"
printf 'seeding (fake+store):  %.2f s\n' "$seed"
printf 'fetches, wall time:    %.2f s\n' "$wall"
printf 'fetches per second:    %.0f\n' "$(echo "$users / $wall" | bc -l)"
printf 'stored (status):       %d users with a last success\n' "$stored"
printf 'server CPU time:       %.2f s user + %.2f s system\n' "$user_s" "$sys_s"
printf 'server peak RSS:       %.1f MiB (%d kB)\n' "$(echo "$rss_kb / 1024" | bc -l)" "$rss_kb"
printf 'store file:            %.1f MiB\n' "$(echo "$db_kb / 1024" | bc -l)"
