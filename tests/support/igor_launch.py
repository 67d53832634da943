"""Starts igorServer (igor-iot 0.99.1) listening on 127.0.0.1 only, for the test suite.

igorServer always binds 0.0.0.0 and has no option to change that, so this launcher
swaps gevent's WSGIServer for a subclass that binds the loopback address, then runs
igorServer's own main() with the remaining command-line arguments.

It also watches its parent: when the test process that started it goes away (for a
shared server nobody stops explicitly), it removes the database directory named by
--remove-on-orphan (if given) and exits, so no server outlives the test run.

Usage: python igor_launch.py [--remove-on-orphan DIR] -- IGORSERVER-ARGS...
"""

import os
import shutil
import sys

# igor.__main__ monkey-patches the standard library for gevent when it is imported;
# import it before anything else touches sockets or threads.
import igor.__main__ as igor_main

import gevent
import gevent.pywsgi

_OriginalServer = gevent.pywsgi.WSGIServer


class LoopbackWSGIServer(_OriginalServer):
    """WSGIServer that ignores the requested host and listens on 127.0.0.1."""

    def __init__(self, listener, *args, **kwargs):
        if isinstance(listener, tuple) and len(listener) == 2:
            listener = ("127.0.0.1", listener[1])
        super().__init__(listener, *args, **kwargs)


gevent.pywsgi.WSGIServer = LoopbackWSGIServer


def _watch_parent(parent_pid, remove_dir):
    while True:
        gevent.sleep(0.5)
        if os.getppid() != parent_pid:
            if remove_dir:
                shutil.rmtree(remove_dir, ignore_errors=True)
            os._exit(0)


def main():
    args = sys.argv[1:]
    remove_dir = None
    if len(args) >= 2 and args[0] == "--remove-on-orphan":
        remove_dir = args[1]
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    gevent.spawn(_watch_parent, os.getppid(), remove_dir)
    sys.argv = ["igorServer"] + args
    igor_main.main()


if __name__ == "__main__":
    main()
