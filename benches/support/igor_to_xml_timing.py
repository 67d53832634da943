"""Times Igor's own JSON -> XML conversion of one tree, in process, for benches/to-xml.sh.

Reads the tree (a JSON file) once with json.load, then runs igor-iot's
elementFromTagAndData(tag, tree).toxml() RUNS times and prints the best time in seconds
on stdout; writes the XML of the last run (plus the newline Igor's REST API adds) to
OUT, so the script can check healthpull writes the same bytes.

Usage: igor_to_xml_timing.py TREE.json TAG RUNS OUT.xml     (the test venv's Python)
"""

import json
import os
import sys
import tempfile
import time

from igor import xmlDatabase


def main():
    tree_path, tag, runs, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(tree_path, encoding="utf-8") as tree_file:
        tree = json.load(tree_file)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "database.xml")
        with open(path, "w", encoding="utf-8") as database_file:
            database_file.write("<data/>")
        database = xmlDatabase.DBImpl(path)
        best = None
        text = ""
        for _ in range(runs):
            started = time.perf_counter()
            text = database.elementFromTagAndData(tag, tree).toxml()
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
    with open(out_path, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    print("%.6f" % best)


if __name__ == "__main__":
    main()
