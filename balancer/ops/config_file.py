"""Reading the config file: the I/O shell around the pure `parse_config`.

It passes the process environment for `${VAR}` and reads `*_file` secrets relative to the
config file's directory; an unreadable file is a located ConfigError like any other problem.
"""

import os

from balancer.config.model import Config
from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError, Problem, decode


def load_config(path: str) -> Config:
    """Read and parse a config file; an unreadable file is a located ConfigError too."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError([Problem(path, 1, 1, "", f"cannot read file: {exc.strerror}")]) from None

    def read_secret(name: str) -> str:
        with open(os.path.join(os.path.dirname(path), name), encoding="utf-8") as fh:
            return fh.read()

    return parse_config(decode(data, path), path, env=os.environ, read_secret=read_secret)
