#!/usr/bin/env bash
# Whole-process benchmark: `healthpull fetch --dry-run --replay` on one day of
# one-second heart-rate data (86,400 points, about 2.7 MB of Fitbit-shaped JSON).
#
# Measures the release binary end to end (start-up, provider loading, reading and
# parsing the recording, mapping, schema validation, Igor XML to stdout) with
# hyperfine, and its peak memory (maximum resident set size) with GNU time.
# Installs hyperfine and GNU time with apt-get when they are missing (needs root).
#
# Usage: benches/whole-process.sh [RUNS]     (RUNS: hyperfine runs, default 10)
# Figures and how to read them: docs/BENCHMARKS.md.
set -euo pipefail

runs="${1:-10}"
points=86400
day=2026-11-23
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release/healthpull"
config="$root/benches/fixtures/healthpull.yaml"

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

echo "building the release binary" >&2
(cd "$root" && cargo build --release --quiet --bin healthpull)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
replay="$work/replay"
mkdir -p "$replay"

# Both benchmarks run the same command.
cmd=("$bin" --config "$config" --now "${day}T23:00:00Z"
    fetch intraday --user jack --methods heart_intraday --set "base_date=$day"
    --dry-run --replay "$replay")

# The recording's file name follows the engine's rule (docs/PROVIDER_FORMAT.md); the
# binary names it when it is missing, so ask it rather than recompute it.
message="$("${cmd[@]}" 2>&1 >/dev/null || true)"
name="$(printf '%s\n' "$message" | sed -n "s|.*(looked for $replay/\([^:]*\): .*|\1|p")"
if [ -z "$name" ]; then
    echo "cannot learn the recording's name from: $message" >&2
    exit 1
fi

# The day, as benches/transform.rs generates it (same heart-rate formula).
awk -v n="$points" -v day="$day" 'BEGIN {
    printf "{\"activities-heart\":[{\"dateTime\":\"%s\",\"value\":{\"restingHeartRate\":58}}],", day
    printf "\"activities-heart-intraday\":{\"dataset\":["
    for (i = 0; i < n; i++) {
        if (i > 0) printf ","
        v = 58 + (int(i / 60) * 7 + int((i % 60) / 10)) % 90
        printf "{\"time\":\"%02d:%02d:%02d\",\"value\":%d}", int(i / 3600), int(i / 60) % 60, i % 60, v
    }
    printf "],\"datasetInterval\":1,\"datasetType\":\"second\"}}"
}' >"$replay/$name"
bytes=$(stat -c %s "$replay/$name")

# One checked run: the XML must hold one <heart-rate> per point.
"${cmd[@]}" >"$work/out.xml"
entries=$(grep -o '<heart-rate>' "$work/out.xml" | wc -l)
if [ "$entries" -ne "$points" ]; then
    echo "expected $points <heart-rate> entries, got $entries" >&2
    exit 1
fi

echo "input: $points points, $bytes bytes of JSON; output: $(stat -c %s "$work/out.xml") bytes of XML" >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" >&2

# Wall time.
quoted="$(printf '%q ' "${cmd[@]}")"
hyperfine --style basic --warmup 2 --runs "$runs" --export-json "$work/hyperfine.json" \
    --command-name "fetch --dry-run --replay (1 day, 1 s)" "$quoted >/dev/null"
mean=$(sed -n 's/^ *"mean": *\([0-9.e+-]*\),*$/\1/p' "$work/hyperfine.json" | head -n1)
min=$(sed -n 's/^ *"min": *\([0-9.e+-]*\),*$/\1/p' "$work/hyperfine.json" | head -n1)

# Peak memory, the largest of three runs.
rss=0
for _ in 1 2 3; do
    /usr/bin/time -v -o "$work/time.txt" "${cmd[@]}" >/dev/null
    kb=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$work/time.txt")
    [ "$kb" -gt "$rss" ] && rss=$kb
done

awk -v n="$points" -v mean="$mean" -v min="$min" -v rss="$rss" 'BEGIN {
    printf "whole process: mean %.1f ms (min %.1f ms) = %.2f M points/s (best %.2f M points/s)\n",
        mean * 1000, min * 1000, n / mean / 1e6, n / min / 1e6
    printf "peak memory:   max RSS %.1f MiB (%d KiB)\n", rss / 1024, rss
}'
