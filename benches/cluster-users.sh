#!/usr/bin/env bash
# Several instances on one PostgreSQL database: USERS users fetched through one
# `healthpull serve` and then through three, side by side in one script run.
#
# 1. a throwaway PostgreSQL server (scripts/with-postgres.sh: Unix socket only, trust,
#    durability off), its CPU read from /proc/<pid>/stat of all its processes;
# 2. per run: a fresh database; `examples/fake_provider.rs` grants USERS users at the
#    fake and seeds the app registration and their tokens into that database
#    (`--postgres-url-env`), then serves as the provider;
# 3. N `healthpull serve` instances (`store: {kind: postgres, pool: 8}`), each under
#    `/usr/bin/time -v`;
# 4. one curl process fetches `/plugin/fitbit?user=uNNNNN&methods=get_bodyweight&
#    base_date=2024-01-31&period=1m` for every user, round-robin over the instances,
#    PARALLEL at a time; every answer must be 200, and the status page (of the first
#    instance) must list every user with a last success;
# 5. the instances get SIGTERM; GNU time reports each one's peak RSS and CPU.
#
# Usage: benches/cluster-users.sh [USERS [PARALLEL]]     (defaults: 10000 32)
# Figures and how to read them: docs/BENCHMARKS.md, "10,000 users over one and three
# instances".
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${HEALTHPULL_TEST_POSTGRES_URL:-}" ]; then
    exec "$root/scripts/with-postgres.sh" "$0" "$@"
fi

users="${1:-10000}"
parallel="${2:-32}"
bin="${HEALTHPULL_BIN:-$root/target/release/healthpull}"
fake_bin="$root/target/release/examples/fake_provider"
for tool in curl /usr/bin/time psql; do
    command -v "$tool" >/dev/null 2>&1 || { echo "cluster-users: $tool is missing" >&2; exit 1; }
done

echo "building the release binary and the fake provider" >&2
(cd "$root" && cargo build --release --quiet --bin healthpull --example fake_provider)

admin_url="$HEALTHPULL_TEST_POSTGRES_URL"
socket_dir="$(sed -n 's/.*host=\([^&]*\).*/\1/p' <<<"$admin_url")"
work="$(mktemp -d)"
fake_pid=""
time_pids=()
stop_instances() {
    local t s
    for t in "${time_pids[@]}"; do
        if kill -0 "$t" 2>/dev/null; then
            s="$(ps -o pid= --ppid "$t" | tr -d ' ' || true)"
            [ -n "$s" ] && kill -TERM "$s" 2>/dev/null || true
            wait "$t" 2>/dev/null || true
        fi
    done
    time_pids=()
}
stop_fake() {
    if [ -n "$fake_pid" ] && kill -0 "$fake_pid" 2>/dev/null; then
        kill -TERM "$fake_pid" 2>/dev/null || true
        wait "$fake_pid" 2>/dev/null || true
    fi
    fake_pid=""
}
cleanup() {
    stop_instances
    stop_fake
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=support/wait_for.sh
. "$root/benches/support/wait_for.sh"
# shellcheck source=support/fake_fitbit.sh
. "$root/benches/support/fake_fitbit.sh"

# The PostgreSQL server's CPU (user + system clock ticks of all its processes).
pg_pid="$(head -1 "$socket_dir/data/postmaster.pid")"
pg_ticks() {
    local total=0 p
    for p in "$pg_pid" $(ps -o pid= --ppid "$pg_pid"); do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
hz="$(getconf CLK_TCK)"

# run N: one run over N instances, on a fresh database.
run() {
    local n="$1" db="bench_$1" i
    PGOPTIONS="-c client_min_messages=warning" psql "$admin_url" -qAt -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    export HEALTHPULL_DATABASE_URL="postgresql:///$db?host=$socket_dir&port=5432&user=postgres"
    local dir="$work/run$n"
    mkdir -p "$dir"
    local seed_start seed_end
    seed_start=$(date +%s.%N)
    "$fake_bin" --users "$users" --width 5 --postgres-url-env HEALTHPULL_DATABASE_URL \
        >"$dir/fake.out" 2>"$dir/fake.err" &
    fake_pid=$!
    wait_for "$dir/fake.out" "listening on http://" 600
    seed_end=$(date +%s.%N)
    local fake_url
    fake_url="$(sed -n 's/^fake provider listening on //p' "$dir/fake.out")"
    cat >"$dir/healthpull.yaml" <<YAML
providers_dir: $root/providers
store: { kind: postgres, url_env: HEALTHPULL_DATABASE_URL, pool: 8 }
$(fitbit_plugin "$fake_url")
YAML
    local urls=()
    for ((i = 0; i < n; i++)); do
        /usr/bin/time -v -o "$dir/time$i.txt" \
            "$bin" --config "$dir/healthpull.yaml" serve --listen 127.0.0.1:0 \
            >"$dir/serve$i.out" 2>"$dir/serve$i.err" &
        time_pids+=($!)
        wait_for "$dir/serve$i.err" "healthpull listening on http://" 60
        urls+=("$(sed -n 's/^healthpull listening on //p' "$dir/serve$i.err" | head -1)")
    done
    for ((i = 0; i < users; i++)); do
        printf 'url = "%s/plugin/fitbit?user=u%05d&methods=get_bodyweight&base_date=2024-01-31&period=1m"\noutput = "/dev/null"\n' \
            "${urls[$((i % n))]}" "$i"
    done >"$dir/urls.cfg"
    local pg_before pg_after start end stored
    pg_before=$(pg_ticks)
    start=$(date +%s.%N)
    fetch_all "$dir/urls.cfg" "$dir/codes.txt" "$parallel" "$users" "$dir/serve0.err"
    end=$(date +%s.%N)
    pg_after=$(pg_ticks)
    stored=$(curl --silent "${urls[0]}/plugin/fitbit/status" | grep -c '"last_success": "' || true)
    stop_instances
    stop_fake
    local wall
    wall=$(echo "$end - $start" | bc -l)
    printf '== %d instance(s), %d users (%d transfers at a time), load: %s\n' \
        "$n" "$users" "$parallel" "$(uptime | sed 's/.*load average: //')"
    printf 'seeding (fake+database): %.2f s\n' "$(echo "$seed_end - $seed_start" | bc -l)"
    printf 'fetches, wall time:      %.2f s\n' "$wall"
    printf 'fetches per second:      %.0f\n' "$(echo "$users / $wall" | bc -l)"
    printf 'stored (status):         %d users with a last success\n' "$stored"
    local total=0
    for ((i = 0; i < n; i++)); do
        local rss_kb user_s sys_s
        rss_kb=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$dir/time$i.txt")
        user_s=$(sed -n 's/^\s*User time (seconds): //p' "$dir/time$i.txt")
        sys_s=$(sed -n 's/^\s*System time (seconds): //p' "$dir/time$i.txt")
        total=$(echo "$total + $user_s + $sys_s" | bc -l)
        printf 'instance %d:              %.2f s user + %.2f s system, peak RSS %.1f MiB\n' \
            "$i" "$user_s" "$sys_s" "$(echo "$rss_kb / 1024" | bc -l)"
    done
    printf 'instances CPU per fetch: %.2f ms\n' "$(echo "1000 * $total / $users" | bc -l)"
    local pg_s
    pg_s=$(echo "($pg_after - $pg_before) / $hz" | bc -l)
    printf 'database CPU (fetches):  %.2f s (%.2f ms per fetch)\n' "$pg_s" "$(echo "1000 * $pg_s / $users" | bc -l)"
}

run 1
run 3
