"""threaded: the WSGI host on waitress with N threads.

waitress was the steadiest threaded WSGI server measured here (cheroot's p99 was ~8x worse).
Its task queue is read for the load report, so requests waiting for a thread are counted.
"""

import signal
from types import FrameType

import waitress

from backends.load import Counters, LoadMeter
from backends.runners import ServeOptions, load_app
from backends.wsgi import WSGIHost


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(options: ServeOptions) -> None:
    app = load_app(options.app)
    meter = LoadMeter(Counters(), workers=options.threads)
    listen = options.listen
    where = {"unix_socket": listen.path, "unix_socket_perms": "660"} if listen.path else {
        "host": listen.host, "port": listen.port}
    server = waitress.create_server(
        WSGIHost(app, meter),
        threads=options.threads,
        backlog=2048,
        connection_limit=2000,
        channel_timeout=120,
        ident="echonext-threaded",
        **where,
    )
    dispatcher = server.task_dispatcher
    meter.queue_depth = lambda: len(dispatcher.queue)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.run()
    finally:
        server.close()
        dispatcher.shutdown(cancel_pending=False, timeout=10)
