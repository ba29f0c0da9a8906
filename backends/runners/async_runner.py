"""async: EchoNextASGI on uvicorn with uvloop and httptools.

uvicorn rather than aiohttp: it is the reference ASGI server, so the adapter is a plain
ASGI app any ASGI server can host, which is the migration path EchoNext's roadmap asks for.
"""

import signal
from types import FrameType

import uvicorn

from backends.asgi import EchoNextASGI
from backends.load import Counters, LoadMeter
from backends.runners import ServeOptions, load_app


def serve(options: ServeOptions) -> None:
    app = load_app(options.app)
    meter = LoadMeter(Counters(), workers=options.threads)
    asgi = EchoNextASGI(app, meter, threads=options.threads)
    listen = options.listen
    config = uvicorn.Config(
        asgi,
        host=listen.host or "127.0.0.1",
        port=listen.port,
        uds=listen.path or None,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=2048,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=75,
    )
    # uvicorn shuts down gracefully, then re-raises the signal under the handler it found:
    # make that handler exit 0, as the other runners do after a graceful stop.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    uvicorn.Server(config).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
