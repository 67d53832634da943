#!/usr/bin/env bash
# Whole-process benchmark: one day of one-second heart-rate data (86,400 points, about
# 2.7 MB of Fitbit JSON) through the shipped `providers/fitbit.yaml` method
# `intraday_time_series` (`resource=activities/heart`, `detail_level=1sec`), replayed
# and fetched live over HTTP from the local fake provider, side by side in one run.
#
# 1. The day is generated (the formula of benches/transform.rs) into a file.
# 2. `examples/fake_provider.rs` (the integration tests' fake as a process) grants one
#    user, writes the app registration and the token into a fresh embedded store, and
#    answers the day's request with that file (`--body`).
# 3. hyperfine runs, in one invocation, `fetch --dry-run --replay` (the file as the
#    recording) and `fetch --dry-run` live against the fake (token check, HTTP, the
#    same mapping, the same XML to stdout). Both outputs are checked to be the same
#    bytes, one <heart-rate> per point.
# 4. The fake's own serving time is its CPU time (user + system, /proc/PID/stat)
#    during the live runs, divided by their number; healthpull's own live time is the
#    live mean minus that. Peak memory (maximum resident set size) comes from GNU time.
#
# Installs hyperfine and GNU time with apt-get when they are missing (needs root).
# Usage: benches/whole-process.sh [RUNS]     (RUNS: hyperfine runs, default 10)
#        HEALTHPULL_BIN=PATH benches/whole-process.sh [RUNS]
#        (measures that healthpull binary, an earlier build say, instead of building one)
# Figures and how to read them: docs/BENCHMARKS.md.
set -euo pipefail

runs="${1:-10}"
warmup=2
points=86400
day=2026-10-30
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${HEALTHPULL_BIN:-$root/target/release/healthpull}"
# shellcheck source=support/fake_fitbit.sh
. "$root/benches/support/fake_fitbit.sh"
fake_bin="$root/target/release/examples/fake_provider"

need() { # need COMMAND APT-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 (for $1)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y -qq "$2" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
    else
        sudo apt-get install -y -qq "$2" >/dev/null
    fi
}
need hyperfine hyperfine
[ -x /usr/bin/time ] || need /usr/bin/time time

if [ -n "${HEALTHPULL_BIN:-}" ]; then
    echo "building the fake provider; measuring $bin" >&2
    (cd "$root" && cargo build --release --quiet --example fake_provider)
else
    echo "building the release binary and the fake provider" >&2
    (cd "$root" && cargo build --release --quiet --bin healthpull --example fake_provider)
fi

work="$(mktemp -d)"
fake_pid=""
cleanup() {
    # Only the process this script started, by its id.
    if [ -n "$fake_pid" ] && kill -0 "$fake_pid" 2>/dev/null; then
        kill -TERM "$fake_pid" 2>/dev/null || true
        wait "$fake_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
replay="$work/replay"
mkdir -p "$replay"

# 1. The day, as benches/transform.rs generates it (same heart-rate formula).
awk -v n="$points" -v day="$day" 'BEGIN {
    printf "{\"activities-heart\":[{\"dateTime\":\"%s\",\"value\":{\"restingHeartRate\":58}}],", day
    printf "\"activities-heart-intraday\":{\"dataset\":["
    for (i = 0; i < n; i++) {
        if (i > 0) printf ","
        v = 58 + (int(i / 60) * 7 + int((i % 60) / 10)) % 90
        printf "{\"time\":\"%02d:%02d:%02d\",\"value\":%d}", int(i / 3600), int(i / 60) % 60, i % 60, v
    }
    printf "],\"datasetInterval\":1,\"datasetType\":\"second\"}}"
}' >"$work/day.json"
bytes=$(stat -c %s "$work/day.json")

# 2. The fake, serving the day to one seeded user.
db="$work/store/healthpull.db"
"$fake_bin" --users 1 --store "$db" \
    --body "/1/user/-/activities/heart/date/$day/1d/1sec.json=$work/day.json" \
    >"$work/fake.out" 2>"$work/fake.err" &
fake_pid=$!
deadline=$((SECONDS + 120))
until grep -q "listening on http://" "$work/fake.out" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$fake_pid" 2>/dev/null; then
        echo "whole-process: the fake provider did not start:" >&2
        cat "$work/fake.err" >&2 || true
        exit 1
    fi
    sleep 0.1
done
fake_url="$(sed -n 's/^fake provider listening on //p' "$work/fake.out")"

cat >"$work/healthpull.yaml" <<YAML
providers_dir: $root/providers
store:
  kind: embedded
  path: $db
lock_dir: $work/locks
$(fitbit_plugin "$fake_url")
YAML

# The same fetch, live and replayed.
live=("$bin" --config "$work/healthpull.yaml" fetch fitbit --user u0000
    --methods intraday_time_series --set resource=activities/heart
    --set "base_date=$day" --set detail_level=1sec --dry-run)
replayed=("${live[@]}" --replay "$replay")

# The recording's file name follows the engine's rule (docs/PROVIDER_FORMAT.md); the
# binary names it when it is missing, so ask it rather than recompute it.
message="$("${replayed[@]}" 2>&1 >/dev/null || true)"
name="$(printf '%s\n' "$message" | sed -n "s|.*(looked for $replay/\([^:]*\): .*|\1|p")"
if [ -z "$name" ]; then
    echo "cannot learn the recording's name from: $message" >&2
    exit 1
fi
cp "$work/day.json" "$replay/$name"

# 3. Checked runs: the same XML both ways, one <heart-rate> per point.
"${replayed[@]}" >"$work/replay.xml" 2>/dev/null
"${live[@]}" >"$work/live.xml" 2>/dev/null
if ! cmp -s "$work/replay.xml" "$work/live.xml"; then
    echo "the live and the replayed XML differ" >&2
    exit 1
fi
entries=$(grep -o '<heart-rate>' "$work/replay.xml" | wc -l)
if [ "$entries" -ne "$points" ]; then
    echo "expected $points <heart-rate> entries, got $entries" >&2
    exit 1
fi

echo "input: $points points, $bytes bytes of JSON; output: $(stat -c %s "$work/replay.xml") bytes of XML" >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" >&2

# CPU time of the fake so far, in seconds (utime + stime of all its threads).
fake_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$fake_pid/stat"
}

# Wall time, side by side. The fake works only during the live runs.
q_replay="$(printf '%q ' "${replayed[@]}")"
q_live="$(printf '%q ' "${live[@]}")"
cpu_before=$(fake_cpu)
hyperfine --style basic --warmup "$warmup" --runs "$runs" --export-json "$work/hyperfine.json" \
    --command-name "replay: fetch --dry-run --replay" "$q_replay >/dev/null 2>&1" \
    --command-name "live: fetch --dry-run (fake over HTTP)" "$q_live >/dev/null 2>&1"
cpu_after=$(fake_cpu)
means=($(sed -n 's/^ *"mean": *\([0-9.e+-]*\),*$/\1/p' "$work/hyperfine.json"))
mins=($(sed -n 's/^ *"min": *\([0-9.e+-]*\),*$/\1/p' "$work/hyperfine.json"))

# Peak memory, the largest of three runs each.
peak() {
    local rss=0 kb
    for _ in 1 2 3; do
        /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>&1
        kb=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$work/time.txt")
        [ "$kb" -gt "$rss" ] && rss=$kb
    done
    echo "$rss"
}
rss_replay=$(peak "${replayed[@]}")
rss_live=$(peak "${live[@]}")

awk -v n="$points" -v rm="${means[0]}" -v rmin="${mins[0]}" -v lm="${means[1]}" -v lmin="${mins[1]}" \
    -v c0="$cpu_before" -v c1="$cpu_after" -v calls=$((runs + warmup)) \
    -v rr="$rss_replay" -v rl="$rss_live" 'BEGIN {
    fake = (c1 - c0) / calls
    own = lm - fake
    printf "replay:        mean %.1f ms (min %.1f ms) = %.2f M points/s\n", rm * 1000, rmin * 1000, n / rm / 1e6
    printf "live:          mean %.1f ms (min %.1f ms), of which the fake serving %.1f ms\n", lm * 1000, lmin * 1000, fake * 1000
    printf "live, own:     %.1f ms = %.2fx replay\n", own * 1000, own / rm
    printf "peak memory:   replay max RSS %.1f MiB, live max RSS %.1f MiB\n", rr / 1024, rl / 1024
}'
