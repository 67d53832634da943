"""Igor's own JSON <-> XML conversion, as a filter for healthpull's parity test.

Why this exists: tests/integration/igor_converter.rs generates JSON trees and checks that
healthpull's converter (src/xml.rs) writes byte for byte the XML that igor-iot 0.99.1
writes, and reads it back the way Igor's JSON interface does. This script runs Igor's
code on the same trees; one process serves all of them.

Run with the test venv's Python (scripts/test-env.sh installs igor-iot 0.99.1).

Protocol, one JSON document per line (UTF-8):
  stdin:  {"tag": "...", "value": <any JSON>}
  stdout: {"error": "ExceptionName: message"}  when Igor cannot convert the value, or
          {"xml": "<...>", "back": ["tag", <value>]}  the element as Igor serialises it
              (minidom toxml()) and what tagAndDictFromElement makes of that text, or
          {"xml": "<...>", "back_error": "..."}  when minidom cannot parse that text.
  stdin:  {"read": "<...>"}  XML written by healthpull
  stdout: {"back": ["tag", <value>]} or {"back_error": "..."}  Igor reading it.
The XML travels as a JSON string, so newlines in it stay on one line. In "back", every
float is sent as {"$float": repr(x)}: Rust's serde_json does not parse all float texts
to the nearest double, so the exact text lets the test compare the doubles themselves.
Integers are sent with all their digits, as json.dumps prints them.
"""

import json
import os
import sys
import tempfile
import xml.dom.minidom

from igor import xmlDatabase


def exact_floats(value):
    """value with floats replaced by {"$float": repr}."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return {"$float": repr(value)}
    if isinstance(value, list):
        return [exact_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: exact_floats(item) for key, item in value.items()}
    return value


def convert(database, request):
    """One reply object for one request object."""
    try:
        element = database.elementFromTagAndData(request["tag"], request["value"])
    except Exception as error:  # Igor lets these through as HTTP 500
        return {"error": "%s: %s" % (type(error).__name__, error)}
    text = element.toxml()
    return dict(xml=text, **read(database, text))


def read(database, text):
    """What Igor's JSON interface makes of the XML text, or why minidom refuses it."""
    try:
        parsed = xml.dom.minidom.parseString(text)
    except Exception as error:
        return {"back_error": "%s: %s" % (type(error).__name__, error)}
    tag, value = database.tagAndDictFromElement(parsed.documentElement)
    return {"back": [tag, exact_floats(value)]}


def main():
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "database.xml")
        with open(path, "w", encoding="utf-8") as database_file:
            database_file.write("<data/>")
        database = xmlDatabase.DBImpl(path)
        for line in sys.stdin.buffer:
            if not line.strip():
                continue
            request = json.loads(line)
            if "read" in request:
                reply = read(database, request["read"])
            else:
                reply = convert(database, request)
            # allow_nan=False: a NaN/Infinity reply would not be JSON; fail loudly.
            sys.stdout.write(json.dumps(reply, allow_nan=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
