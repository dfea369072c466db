"""moto's server, one AWS request at a time.

Usage: python moto_serial.py HOST PORT

moto_server handles requests on many threads and its backends take no
locks, so two concurrent requests can interleave inside one operation: two
conditional `ADD`s on a DynamoDB item both pass their condition and both
return the final value. AWS services apply each request atomically; running
moto's own WSGI application behind one lock restores that, which the item
store contract checks (exact counters and single winners under concurrency)
rely on. Everything else is moto's server as `moto_server -H HOST -p PORT`
starts it.
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class FairLock:
    """A lock taken in arrival order. threading.Lock hands itself to any
    waiter, so under the test suite's bursts one request could wait behind
    many later ones (seen: a token request starved past a test client's
    30 s timeout)."""

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._turn:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._turn.wait()

    def __exit__(self, *exc: object) -> None:
        with self._turn:
            self._serving += 1
            self._turn.notify_all()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = FairLock()

    def serial(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    run_simple(host, port, serial, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
