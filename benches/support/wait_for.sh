# Sourced by the benchmark scripts.
# wait_for FILE PATTERN SECONDS: waits until a line of FILE matches PATTERN; after
# SECONDS, prints FILE and exits 1.
wait_for() {
    local deadline=$((SECONDS + $3))
    until grep -q "$2" "$1" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$(basename "$0" .sh): no '$2' in $1 within $3 s:" >&2
            cat "$1" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}
