"""Check named mutants against chosen tests, without a full `make mutation` run.

    .venv/bin/python bench/mutation/check.py NAMES_FILE tests/test_x.py[::test_y] ...

NAMES_FILE holds one mutant name a line (as `mutmut results` prints them). Uses the mutated
sources of the last `mutmut run` (mutants/balancer) with the CURRENT tests/, in a scratch
copy, so a new test can be seen killing its mutant. One process runs every mutant (mutmut's
trampolines read MUTANT_UNDER_TEST at each call), which matters under `nice -n 19`.
Prints `name: killed|survived`; a first line `intact: survived` checks the tests pass.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest


def main(names_file: str, tests: list[str]) -> None:
    names = [n.strip() for n in Path(names_file).read_text().splitlines() if n.strip()]
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        shutil.copytree("mutants/balancer", tree / "balancer")
        for part in ("backends", "config", "tests"):
            shutil.copytree(part, tree / part)
        shutil.copy("pyproject.toml", tree)
        os.chdir(tree)
        sys.path.insert(0, str(tree))
        args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
        for name in ["intact", *names]:
            os.environ["MUTANT_UNDER_TEST"] = "" if name == "intact" else name
            code = pytest.main(args)
            print(f"RESULT {name}: {'survived' if code == 0 else 'killed'}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
