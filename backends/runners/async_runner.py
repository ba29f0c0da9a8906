"""async: EchoNextASGI on uvicorn with uvloop and httptools.

uvicorn rather than aiohttp: it is the reference ASGI server, so the adapter is a plain
ASGI app any ASGI server can host, which is the migration path EchoNext's roadmap asks for.
"""

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
    uvicorn.Server(config).run()
