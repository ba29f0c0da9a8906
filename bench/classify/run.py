"""Classifier cost of one uncached route, and the route cache's memory, for hostile paths.

`python bench/classify/run.py [reject|decode]`: microseconds per uncached route (best of 30
runs of 50) with the shipped config's rules, then the cache's growth after 10,000 distinct
requests. The target: at most 50 µs for any path `limits.max_uri_size` admits, 16 MiB of cache.
"""

import dataclasses
import sys
import timeit
import tracemalloc

from balancer.balancing.classify import BadTarget, Classifier
from balancer.ops.config_file import load_config
from bench.common import ROOT

CASES = {
    "/api/items/42": "/api/items/42",
    "8KiB of /a": "/a" * 4090,
    "8KiB of /1": "/1" * 4090,
    "8KiB, one segment": "/" + "x" * 8100,
    "8KiB of 21-char ids": "/" + "/".join(["a1b2c3d4e5f6g7h8i9j0k"] * 370),
    "2700 x %41": "/" + "%41" * 2700,
    "8KiB of /1/%41": "/1/%41" * 1360,
    "8KiB of =%41": "/" + "=%41" * 2030,
    "2700 x %2F": "/" + "%2F" * 2700,
    "8KiB of /.": "/." * 4090,
}


class Facts:
    def __init__(self, method: str, path: str) -> None:
        self.method, self.path, self.query, self.content_length = method, path, "", None

    def host(self) -> str:
        return "bench"

    def content_type(self) -> str:
        return ""

    def header(self, name: str) -> str | None:
        return None


def main() -> None:
    routing = load_config(str(ROOT / "config" / "balancer.yaml")).routing
    assert routing is not None
    mode = sys.argv[1] if len(sys.argv) > 1 else "reject"
    classifier = Classifier(dataclasses.replace(routing, encoded_slashes=mode))

    def once(path: str) -> str:
        classifier._cache.clear()
        try:
            classifier.classify(Facts("POST", path), None)
        except BadTarget:
            return "refused"
        return "ok"

    for name, path in CASES.items():
        best = min(timeit.repeat(lambda path=path: once(path), number=50, repeat=30)) / 50
        print(f"{name:22s} {best * 1e6:8.1f} µs  {once(path)}")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(10_000):
        classifier.classify(Facts("GET", f"/api/{i}/" + "b" * (490 - len(str(i)))), None)
    grown = tracemalloc.get_traced_memory()[0] - before
    print(f"route cache: {len(classifier._cache)} entries, {grown / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
