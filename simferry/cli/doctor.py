"""``simferry doctor``: what is installed and usable here.

Its exit status answers one question, whether the default demo (``simferry compare``) can
run, so a setup script can stop early; every other plug-in is reported with its reason,
as compare would show it as a skipped row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from simferry import plugins
from simferry.cli.common import Subparsers, print_json
from simferry.engine.cleanup import clean_stale
from simferry.launchers.common import cpu_count, gpu_count
from simferry.launchers.dragon import login_node_note
from simferry.transports.common import gib

#: What the default demo (``make demo``: ``simferry compare``) cannot do without; the
#: other plug-ins are rows it skips with their reason when they are missing.
DEMO_NEEDS = {"launcher": ["local"], "transport": ["futures", "filesystem", "shm"]}


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "doctor", help="what is installed and usable here; exit 1 if the default demo cannot run"
    )
    p.add_argument("--clean", action="store_true", help="remove data left by killed runs")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    """What is usable here; exit 1 when the default demo could not run."""
    found: dict[str, Any] = {"cores": cpu_count(), "gpus": gpu_count()}
    lines = [f"cores: {found['cores']}   GPUs: {found['gpus']}"]
    shm = Path("/dev/shm")
    if shm.is_dir():
        found["shm_free_bytes"] = shutil.disk_usage(shm).free
        lines.append(f"/dev/shm free: {gib(found['shm_free_bytes'])}")
    missing = check_plugins(found, lines)
    note = login_node_note()
    if note:
        found["dragon_login_node"] = note
        lines.append(f"dragon    {note}")
    if args.clean:
        found["removed"] = [str(p) for p in clean_stale()]
        lines += [f"removed stale {p}" for p in found["removed"]]
    found["demo_ready"] = not missing
    if args.json:
        print_json(found)
    else:
        print("\n".join(lines))
    if missing:
        print(
            f"simferry: error: the default demo (simferry compare) needs {', '.join(missing)}, "
            "which cannot run here; see the reasons above.",
            file=sys.stderr,
        )
        return 1
    return 0


def check_plugins(found: dict[str, Any], lines: list[str]) -> list[str]:
    """Record each plug-in's state in ``found`` and ``lines``; return what the demo misses."""
    registries: list[tuple[str, dict[str, Any]]] = [
        ("launcher", plugins.launchers()),
        ("transport", plugins.transports()),
    ]
    missing: list[str] = []
    for kind, registry in registries:
        found[kind + "s"] = {}
        for name, cls in sorted(registry.items()):
            try:
                reason = cls(name=name).unavailable_reason()
            except Exception as exc:  # a config that needs arguments to be built
                reason = f"cannot check: {exc}"
            found[kind + "s"][name] = reason or "ok"
            lines.append(f"{kind:9} {name:11} {'ok' if not reason else 'unavailable: ' + reason}")
            if reason and name in DEMO_NEEDS[kind]:
                missing.append(f"the {name} {kind}")
            for variant in cls.compare_variants if kind == "transport" and not reason else ():
                why = cls(name=name, **variant).unavailable_reason()
                label = "  " + " ".join(map(str, variant.values()))
                lines.append(f"{'':9} {label:11} {'ok' if not why else 'unavailable: ' + why}")
    return missing
