"""The suite runs anywhere: no test may start a Python found on the PATH (see conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import PATH_PYTHON_STUB_MESSAGE


def test_path_python_is_a_failing_stub() -> None:
    for name in ("python3", "python"):
        exe = shutil.which(name)
        assert exe is not None
        r = subprocess.run([name, "-c", "print('hello')"], capture_output=True, text=True)
        assert r.returncode == 97 and r.stdout == ""
        assert PATH_PYTHON_STUB_MESSAGE in r.stderr
        # through a shell too, as `sh -c 'python3 ...'` would find it
        r = subprocess.run(["sh", "-c", f"{name} -c 'print(1)'"], capture_output=True, text=True)
        assert r.returncode == 97 and PATH_PYTHON_STUB_MESSAGE in r.stderr


def test_sys_executable_runs_pydiskimg() -> None:
    r = subprocess.run([sys.executable, "-m", "pydiskimg", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("pydiskimg ")
