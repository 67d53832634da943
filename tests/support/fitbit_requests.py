"""Record the HTTP requests python-fitbit 0.3.1 itself makes, for the parity test.

Reads one JSON object per line on stdin:

    {"method": "get_bodyweight", "kwargs": {"base_date": {"$date": "2024-01-15"}}}

optionally with "methods" (a list, called in turn with the same kwargs, as Igor's old
plugin did) instead of "method", and "system" (the Accept-Language value, default
python-fitbit's own `en_US`). Argument values of the form {"$date": "YYYY-MM-DD"} and
{"$time": "HH:MM[:SS]"} become `datetime.date` and `datetime.time` objects.

Writes one JSON object per input line on stdout, in the same order:

    {"ok": true, "requests": [{"verb": "GET", "path": "/1/...json?query=..",
                               "accept_language": "en_US"}]}
    {"ok": false, "error": "ValueError", "message": "...", "requests": [...]}

The requests go to a loopback HTTP server started here, which answers every request
with `{}`; the library is given a token that expires far in the future so it never
tries to refresh.
"""

import datetime
import http.server
import json
import os
import sys
import threading

os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"

import fitbit  # noqa: E402  (the environment variable must be set first)

FAR_FUTURE = 4102444800  # 2100-01-01T00:00:00Z


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers everything with an empty JSON object and remembers what was asked."""

    captured = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        Recorder.captured.append(
            {
                "verb": self.command,
                "path": self.path,
                "accept_language": self.headers.get("Accept-Language"),
            }
        )
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer
    do_DELETE = _answer

    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


def decode(value):
    """Turns the `$date`/`$time` markers into Python objects, recursively."""
    if isinstance(value, dict):
        if set(value) == {"$date"}:
            return datetime.date.fromisoformat(value["$date"])
        if set(value) == {"$time"}:
            return datetime.time.fromisoformat(value["$time"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def client(endpoint, system):
    api = fitbit.Fitbit(
        "client-id",
        "client-secret",
        access_token="access-token",
        refresh_token="refresh-token",
        expires_at=FAR_FUTURE,
        system=system,
    )
    api.API_ENDPOINT = endpoint
    return api


def run_case(endpoint, case):
    methods = case.get("methods") or [case["method"]]
    kwargs = decode(case.get("kwargs") or {})
    api = client(endpoint, case.get("system", fitbit.Fitbit.US))
    Recorder.captured = []
    try:
        for name in methods:
            getattr(api, name)(**kwargs)
    except Exception as e:  # every refusal is reported, whatever its class
        return {
            "ok": False,
            "error": type(e).__name__,
            "message": str(e),
            "requests": Recorder.captured,
        }
    return {"ok": True, "requests": Recorder.captured}


def main():
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address
    endpoint = "http://%s:%d" % (host, port)
    fitbit.Fitbit.API_ENDPOINT = endpoint
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            result = run_case(endpoint, json.loads(line))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
