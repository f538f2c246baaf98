"""Test-only fault injection, one hook that workers of every launcher and mode call.

It sits beside the base modules because both the task bodies (workload) and the
launchers' task wrappers fire it, and neither may import the other.
"""

from __future__ import annotations

import os
import signal


def fault_point(kind: str, index: int, step: int) -> None:
    """Test-only fault injection: SIGKILL this worker where ``SIMFERRY_FAULT`` says.

    ``SIMFERRY_FAULT=kill-sim:<index>:<step>`` (or ``kill-train:<index>:<sample>``; several
    joined by commas) kills the worker right after that step was written (or that sample
    read), as the OOM killer or a node failure would. A ``@<path>`` suffix fires only once
    per run: the first worker to create ``<path>`` dies, so a retry succeeds. ``raise-``
    instead of ``kill-`` raises an exception in the task instead (a failing simulation).
    ``kill-take:<token>:0`` fires in the launcher's ``tracked`` wrapper, before the worker
    notes which task it took.
    """
    spec = os.environ.get("SIMFERRY_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        point, _, marker = item.partition("@")
        action, _, where = point.strip().partition("-")
        if action not in ("kill", "raise") or where != f"{kind}:{index}:{step}":
            continue
        if marker:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                return
        if action == "raise":
            raise RuntimeError(f"injected failure {point.strip()} (SIMFERRY_FAULT)")
        os.kill(os.getpid(), signal.SIGKILL)
