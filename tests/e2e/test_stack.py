"""`make run`'s launcher: the whole system up through one command, and Ctrl-C leaves nothing."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from tests.helpers import ROOT


def test_stack_serves_through_the_balancer_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(f"""\
listen: 127.0.0.1:0
pools:
  io: {{kind: async, backends: ["unix:{tmp_path}/io.sock"]}}
  light: {{kind: threaded, backends: ["unix:{tmp_path}/light.sock"]}}
  heavy: {{kind: multiprocess, backends: ["unix:{tmp_path}/heavy.sock"]}}
""")
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        stack = subprocess.Popen([sys.executable, "-m", "backends.stack", "-c", str(config)],
                                 stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"INFO listening on (\S+)", log.read_text())):
            assert stack.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://{match.group(1)}/api/items?id=9", timeout=10) as r:
            assert r.status == 200 and b'"id": 9' in r.read()
        family = psutil.Process(stack.pid).children(recursive=True)
        assert len(family) >= 5  # balancer, async, threaded, gunicorn master + workers
        stack.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert stack.wait(30) == 0
        _, alive = psutil.wait_procs(family, timeout=5)
        assert alive == [], f"left behind: {alive}"
        assert list((tmp_path / ".run/logs").glob("*.log"))
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
