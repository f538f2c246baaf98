"""Removal of data left behind by runs that were killed outright (SIGKILL, power loss).

Ordinary exits clean up after themselves; this is for what no process survived to free.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

from simferry.transports.shm import PREFIX


def clean_stale(shm_dir: Path = Path("/dev/shm")) -> list[Path]:
    """Remove ``simferry-<run>-<pid>`` directories whose owning process is gone."""
    removed = []
    for path in shm_dir.glob(PREFIX + "*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
