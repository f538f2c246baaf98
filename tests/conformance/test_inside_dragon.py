"""The Dragon parts of the shared suites, run in a pytest started under ``dragon``.

A DDict and Dragon's pools exist only inside a Dragon runtime, so the streaming-index
suite's DDict tests and the launcher suite's Dragon tests skip outside one; this test
starts one runtime for both (a runtime takes seconds to start, so one is shared).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simferry.launchers import dragon

REPO = Path(__file__).resolve().parents[2]
#: Tests of the two suites that run inside Dragon: 5 on the DDict's index, 6 on Dragon's pools.
INSIDE = 11


@pytest.mark.integration
@pytest.mark.skipif(
    dragon.missing_reason() is not None or dragon.in_runtime(),
    reason=dragon.missing_reason() or "this test starts the runtime itself",
)
def test_ddict_index_and_dragon_launcher_pass_inside_dragon(tmp_path: Path) -> None:
    exe = dragon.dragon_executable()
    assert exe is not None
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    tests = ["tests/conformance/test_streaming_index.py", "tests/conformance/test_launchers.py"]
    # On a login node (a Slurm/PBS client, no allocation) Dragon needs to be told: one node.
    cmd = [str(exe), *dragon.launch_flags([]), "--", sys.executable, "-m", "pytest", "-q"]
    cmd += ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")]
    cmd += [*tests, "-k", "ddict or dragon"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    result = [line for line in proc.stdout.splitlines() if " deselected in " in line]
    assert result and result[-1].startswith(f"{INSIDE} passed, ") and "skip" not in result[-1], out
