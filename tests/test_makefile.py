"""`make test` skips the slow tests on a developer's machine and runs them in CI (CI set, as .ci/run sets it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_line(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "SLOW")} | env
    dry = subprocess.run(["make", "-n", "-s", "test"], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    return next(line for line in dry.stdout.splitlines() if "-m pytest" in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_make_test_runs_slow_tests_only_in_ci_or_when_asked():
    assert '-m "not slow"' in pytest_line()
    assert "not slow" not in pytest_line(CI="true")
    assert "not slow" not in pytest_line(SLOW="1")
    assert 'CI="${CI:-1}" make test' in (ROOT / ".ci" / "run").read_text()
