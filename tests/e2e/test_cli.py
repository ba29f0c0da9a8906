"""`balancer check` and `balancer run` as the operator sees them: exit codes and messages."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from balancer.config.schema import config_schema
from tests.helpers import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_check_accepts_a_valid_file_with_a_one_line_summary(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("listen: 127.0.0.1:8080\npools:\n  default:\n"
                    "    backends: [http://127.0.0.1:8101, unix:/tmp/x.sock]\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(f"{path}: ok (1 listener(s), 1 pool(s), 2 backend(s)")


def test_check_reports_every_error_located_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: 127.0.0.1:8080\npools:\n  heavy:\n    backends:\n"
                    "      - http//x\n    polcy: fastest\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (f"{path}:5:9: pools.heavy.backends[0]: 'http//x' is not a backend "
                        "address (expected http://host:port or unix:/path)")
    assert lines[1].startswith(f"{path}:6:5: pools.heavy.polcy: unknown key 'polcy'")
    assert lines[2] == f"{path}: 2 problem(s); config not valid"
    assert result.stdout == ""


def test_check_on_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml:1:1: cannot read file: No such file or directory" in result.stderr


def test_run_refuses_an_invalid_file_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: nowhere\npools: {}\n")
    result = run_cli("run", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:1:9: listen: 'nowhere' is not a listen address" in result.stderr


def test_the_shipped_config_is_valid() -> None:
    result = run_cli("check", "-c", "config/balancer.yaml")
    assert result.returncode == 0, result.stderr


def test_run_exits_1_with_a_clear_message_when_it_cannot_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:  # bound without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "lb.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\n"
                          "pools:\n  default:\n    backends: [http://127.0.0.1:1]\n")
        result = subprocess.run([sys.executable, "-m", "balancer", "run", "-c", str(config)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_balancer_schema_prints_it_and_version_prints_the_version() -> None:
    out = subprocess.run([sys.executable, "-m", "balancer", "schema"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert json.loads(out) == config_schema()
    out = subprocess.run([sys.executable, "-m", "balancer", "--version"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert re.fullmatch(r"balancer \d+\.\d+\.\d+\S*\n", out)


def test_check_substitutes_from_its_environment(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(textwrap.dedent("""\
        listen: ${LB_LISTEN:-127.0.0.1:0}
        pools:
          default: {backends: ["${LB_BACKEND}"]}
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    run = [sys.executable, "-m", "balancer", "check", "-c", str(path)]
    unset = subprocess.run(run, capture_output=True, text=True, env=env, cwd=ROOT)
    assert unset.returncode == 2
    assert f"{path}:3:24: pools.default.backends[0]: environment variable 'LB_BACKEND'" \
        in unset.stderr
    assert ": 1 problem(s)" in unset.stderr  # not also "'' is not a backend address"
    ok = subprocess.run(run, capture_output=True, text=True, cwd=ROOT,
                        env={**env, "LB_BACKEND": "http://10.1.2.3:80"})
    assert ok.returncode == 0, ok.stderr
