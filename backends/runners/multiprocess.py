"""multiprocess: the WSGI host on gunicorn, N prefork sync workers.

The app is loaded and the shared load counters created in the master before it forks, so
every worker reports the whole instance. gunicorn handles SIGTERM (graceful stop) itself.
Its sync workers close every connection after one response (`Connection: close`).
"""

import os
from typing import Any

from gunicorn.app.base import BaseApplication

from backends.load import Counters, LoadMeter, accept_backlog
from backends.runners import ServeOptions, load_app
from backends.wsgi import WSGIHost


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, wsgi: Any, settings: dict[str, Any]) -> None:
        self._wsgi = wsgi
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._wsgi


def serve(options: ServeOptions) -> None:
    app = load_app(options.app)
    listen = options.listen
    port = listen.port
    meter = LoadMeter(
        Counters(shared=True),
        workers=options.workers,
        queue_depth=(lambda: accept_backlog(port)) if not listen.path else None,
        root_pid=os.getpid(),
    )
    bind = f"unix:{listen.path}" if listen.path else f"{listen.host}:{listen.port}"
    _Gunicorn(WSGIHost(app, meter), {
        "bind": [bind],
        "workers": options.workers,
        "worker_class": "sync",
        "backlog": 2048,
        "timeout": 120,
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "echonext-multiprocess",
    }).run()
