"""`cse dev up`: one slow health probe on a busy machine does not make a child unhealthy."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

from tooling.devstack import infra
from tooling.devstack.supervisor import PROBE_RETRIES, ChildState, StackConfig, Supervisor


def test_a_child_turns_unhealthy_only_after_failed_probes_in_a_row(tmp_path: Path) -> None:
    answers: list[bool] = []
    spec = infra.ProcessSpec(name="probe", argv=[], kind="infra", ready=lambda: answers.pop(0))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child = ChildState(spec=spec, log_path=tmp_path / "log", proc=proc, started_at=0.0)
        sup = Supervisor(StackConfig(run_dir=tmp_path), out=io.StringIO())

        def probe(result: bool) -> tuple[bool, str]:
            answers.append(result)
            asyncio.run(sup._check(child, 100.0, None))  # type: ignore[arg-type]  # infra: no HTTP
            return child.healthy, child.state

        assert probe(True) == (True, "healthy")
        for _ in range(PROBE_RETRIES - 1):
            assert probe(False) == (True, "healthy")  # a slow probe or two: still healthy
        assert probe(True) == (True, "healthy")  # and the count starts again
        for _ in range(PROBE_RETRIES - 1):
            probe(False)
        assert probe(False) == (False, "unhealthy")
        assert probe(True) == (True, "healthy")
    finally:
        proc.kill()
        proc.wait()
