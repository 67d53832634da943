# Sourced by the benchmark scripts.
# fitbit_plugin FAKE_URL: the config's `plugins:` block, the `fitbit` plugin pointed at the
# local fake provider.
fitbit_plugin() {
    cat <<YAML
plugins:
  fitbit:
    provider: fitbit
    authorize_url: $1/authorize
    token_url: $1/oauth2/token
    base_url: $1
YAML
}

# fetch_all URLS_CFG CODES PARALLEL USERS SERVE_LOG: one curl process fetches every URL
# of the curl config URLS_CFG, PARALLEL at a time, the status codes into CODES; all USERS
# answers must be 200, else the codes and the end of SERVE_LOG are printed and the
# script exits 1.
fetch_all() {
    curl --silent --no-progress-meter --parallel --parallel-max "$3" --config "$1" \
        --write-out '%{http_code}\n' >"$2"
    local ok
    ok=$(grep -c '^200$' "$2" || true)
    if [ "$ok" -ne "$4" ]; then
        echo "$(basename "$0" .sh): only $ok of $4 fetches answered 200:" >&2
        sort "$2" | uniq -c >&2
        tail -20 "$5" >&2
        exit 1
    fi
}
