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


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serial(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    run_simple(host, port, serial, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
