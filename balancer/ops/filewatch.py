"""Reload when the config file changes (`watch: true`): poll its content digest.

I/O shell. Polling the content (every `POLL` seconds), not watching inodes, sees every way a
file is replaced: written in place, renamed over (editors, `git checkout`), or a Kubernetes
ConfigMap mount swapping its `..data` symlink. A change is reported as if SIGHUP arrived, so
the reload is exactly SIGHUP's (a bad file is refused and the old config keeps serving). An
unreadable file (a rename in progress) is no change: the next poll looks again.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable

from balancer.config.yamltree import ConfigError, decode

log = logging.getLogger("balancer")

POLL = 0.5


def file_digest(path: str) -> str | None:
    """The file's digest as `Config.digest` has it (SHA-256 of the text read as UTF-8, 12
    hex digits), following symlinks; None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    with contextlib.suppress(ConfigError):  # undecodable: a change all the same (the reload
        raw = decode(raw, path).encode()     # will say what is wrong); else as load_config
    return hashlib.sha256(raw).hexdigest()[:12]


async def watch_file(path: str, is_on: Callable[[], bool], on_change: Callable[[], None],
                     loaded: str | None, poll: float = POLL) -> None:
    """Call `on_change` whenever the content differs from the last seen, while `is_on()`.
    `loaded` is the digest of the config serving: a change made before the first poll (or
    before this task ran at all) is seen too."""
    seen = loaded
    while True:
        await asyncio.sleep(poll)
        if not is_on():
            seen = None  # turned back on by a reload: the next read sets the baseline
            continue
        digest = file_digest(path)
        if digest is None or digest == seen:
            continue
        if seen is not None:
            log.info("%s changed: reloading", path)
            on_change()
        seen = digest
