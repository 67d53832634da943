#!/usr/bin/env bash
# to-xml benchmark: one day of one-second heart-rate points (86,400 `heart-rate` rows
# of {dateTime, time, value}, the tree `fetch` stores for Fitbit's intraday method)
# converted to Igor XML by `healthpull to-xml` and by Igor's own converter.
#
# - Igor: igor-iot 0.99.1's elementFromTagAndData(tag, tree).toxml() in process (the
#   test venv's Python, benches/support/igor_to_xml_timing.py): the conversion alone,
#   the JSON already loaded, best of IGOR_RUNS;
# - healthpull: the whole release process, `healthpull to-xml --tag jack < tree.json`
#   (start-up, reading and indexing the JSON, the check, the XML streamed to stdout),
#   best of RUNS.
# Both outputs must be the same bytes. Prints both times and the ratio.
#
# Usage: benches/to-xml.sh [RUNS [IGOR_RUNS]]     (defaults: 20 3)
#        HEALTHPULL_BIN=path benches/to-xml.sh ...  (time that binary, e.g. an older build,
#                                                    instead of building this tree's)
# Figures: docs/BENCHMARKS.md, section "to-xml against Igor's converter".
set -euo pipefail

runs="${1:-20}"
igor_runs="${2:-3}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${HEALTHPULL_BIN:-$root/target/release/healthpull}"
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "to-xml: $python is missing (scripts/test-env.sh makes the venv)" >&2; exit 1; }

if [ -z "${HEALTHPULL_BIN:-}" ]; then
    echo "building the release binary" >&2
    (cd "$root" && cargo build --release --quiet --bin healthpull)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The tree, with the heart-rate formula of benches/transform.rs.
"$python" - "$work/tree.json" <<'PY'
import json, sys
day = "2026-11-23"
rows = [{"dateTime": day,
         "time": "%02d:%02d:%02d" % (i // 3600, i // 60 % 60, i % 60),
         "value": 58 + ((i // 60) * 7 + (i % 60) // 10) % 90}
        for i in range(86400)]
with open(sys.argv[1], "w") as f:
    json.dump({"heart-rate": rows}, f, separators=(",", ":"))
PY

igor_s="$("$python" "$root/benches/support/igor_to_xml_timing.py" "$work/tree.json" jack "$igor_runs" "$work/igor.xml")"

"$bin" to-xml --tag jack <"$work/tree.json" >"$work/ours.xml"
cmp -s "$work/igor.xml" "$work/ours.xml" || { echo "to-xml: healthpull's XML differs from Igor's" >&2; exit 1; }

best=""
for ((r = 0; r < runs; r++)); do
    start=$(date +%s%N)
    "$bin" to-xml --tag jack <"$work/tree.json" >/dev/null
    end=$(date +%s%N)
    t=$(( end - start ))
    if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
done
ours_s=$(echo "$best / 1000000000" | bc -l)
printf 'tree:                  86400 rows, %d bytes of JSON, %d bytes of XML\n' \
    "$(stat -c %s "$work/tree.json")" "$(stat -c %s "$work/ours.xml")"
printf 'igor, in process:      %.1f ms (best of %d)\n' "$(echo "$igor_s * 1000" | bc -l)" "$igor_runs"
printf 'healthpull, process:   %.1f ms (best of %d)\n' "$(echo "$ours_s * 1000" | bc -l)" "$runs"
printf 'ratio:                 %.1fx\n' "$(echo "$igor_s / $ours_s" | bc -l)"
