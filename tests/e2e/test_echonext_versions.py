"""pyEchoNext as users have it: 0.7.17 and 0.7.18 (the current release), parameterised routes.

The release installed in .venv is tested here; `test_the_other_release` runs this file and
the demo backend's tests again in a second virtualenv that differs only in pyEchoNext.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from backends.echonext import SUPPORTED, import_echonext
from tests.fakes import KINDS
from tests.helpers import ROOT, BackendProcessFactory, BalancerFactory, one_pool_config

ECHONEXT = import_echonext()
OTHER_RUN = "ECHONEXT_OTHER_RELEASE"  # set in the second run, so it does not recurse


def test_the_installed_release_is_one_we_patch() -> None:
    assert ECHONEXT.__version__ in SUPPORTED


@pytest.mark.parametrize("kind", KINDS)
async def test_parameterised_routes_behind_the_balancer_collapse_into_one_template(
    kind: str, start_backend: BackendProcessFactory,
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    backend = start_backend(kind, "--app", "tests.echonext_users:app")
    routing = ("routing:\n  classes: {io: default, light_cpu: default, heavy_cpu: default}\n")
    lb = await balancer_factory(one_pool_config(f"unix:{backend.socket}", extra=routing))
    for user in range(1, 8):
        async with session.get(f"{lb.url}/users/{user}") as resp:
            assert resp.status == 200 and await resp.json() == {"user": str(user)}
    async with session.get(f"{lb.url}/users/5/orders/9") as resp:
        assert resp.status == 200 and await resp.json() == {"user": "5", "order": "9"}
    async with session.get(f"{lb.url}/users") as resp:
        assert resp.status == 200 and await resp.json() == {"users": "all"}
    async with session.get(f"{lb.url}/nobody/1") as resp:
        assert resp.status == 404
    async with session.get(f"{lb.admin_url}/status") as resp:
        routes = {r["route"]: r["samples"] for r in (await resp.json())["routes"]}
    assert routes["GET /users/{n}"] == 7
    assert routes["GET /users/{n}/orders/{n}"] == 1
    assert "GET /users/1" not in routes


def test_the_other_release(tmp_path: Path) -> None:
    """This file and the demo backend's tests again, with the other supported release (not
    the three that measure memory, CPU or timing: they are about the runners, not EchoNext)."""
    if os.environ.get(OTHER_RUN):
        pytest.skip("this is the other release's run")
    other = next(v for v in SUPPORTED if v != ECHONEXT.__version__)
    python = _venv_with(other)
    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider",
         "tests/e2e/test_echonext_versions.py", "tests/e2e/test_backends.py",
         "-k", "not memory_stays_flat and not sigusr1 and not busy_multiprocess"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, OTHER_RUN: other, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout


def _venv_with(version: str) -> Path:
    """.venv/pyechonext-VERSION: its own pyechonext, every other package from .venv."""
    home = ROOT / ".venv" / f"pyechonext-{version}"
    python = home / "bin" / "python"
    site = home / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    if (site / "pyechonext" / "__init__.py").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         f"pyechonext=={version}"], capture_output=True, text=True)
    if install.returncode != 0:
        message = f"cannot install pyechonext {version}: {install.stderr[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    main_site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    (site / "zz_main_venv.pth").write_text(f"import site; site.addsitedir({main_site!r})\n")
    check = subprocess.run([str(python), "-c", "import json, pyechonext; "
                            "print(json.dumps(pyechonext.__file__))"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # (0.7.17 prints a "new version available" banner on import: the path is the last line)
    assert json.loads(check.stdout.strip().splitlines()[-1]).startswith(str(site)), check.stdout
    return python
