"""Fuzzing the config loader: any TOML text or any dict gives a RunConfig or a UsageError.

A valid RunConfig must also pass or fail the up-front checks (``check_run``) with a
UsageError: no other exception may escape to the user as a traceback. Nothing is created.
"""

from __future__ import annotations

import contextlib
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from simferry import plugins
from simferry.config import RunConfig, build, load_config
from simferry.engine.run import check_run
from simferry.errors import UsageError

# Hypothesis caches under ./.hypothesis; keep that in a directory removed at exit.
_HOME = tempfile.TemporaryDirectory(prefix="simferry-hypothesis-")
set_hypothesis_home_dir(_HOME.name)

#: SIMFERRY_FUZZ_EXAMPLES=5000 for a longer hunt; no example database is left behind.
SETTINGS = settings(
    max_examples=int(os.environ.get("SIMFERRY_FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

#: Field names real configs use, so the fuzzer reaches validation, not only "unknown key".
KNOWN = sorted(
    {"name", "runs_dir"}
    | set(RunConfig.model_fields)
    | {f for cls in plugins.transports().values() for f in cls.model_fields}
    | {f for cls in plugins.launchers().values() for f in cls.model_fields}
    | {"num_sims", "grid_size", "step_seconds", "trainers", "mode", "seed", "retries"}
)
NAMES = sorted(plugins.transports()) + sorted(plugins.launchers()) + ["phased", "streaming"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([*NAMES, "", "/", "/proc/x", "/dev/shm", "\x00", "runs", "1e3", "nan"]),
    st.text(max_size=20),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
keys = st.sampled_from(KNOWN) | st.text(max_size=10)
section = st.dictionaries(keys, values, max_size=5)
documents = st.fixed_dictionaries(
    {},
    optional={
        "workload": section | values,
        "launcher": section | values,
        "transport": section | values,
        "runs_dir": values,
    },
) | st.dictionaries(keys, values, max_size=4)


#: Close to real configs: right keys, numbers around the limits, odd paths.
paths = st.sampled_from(
    ["", ".", "/", "/proc/x", "/dev/shm", "/dev/null", "/etc/passwd", "~", "a" * 300, "runs/x"]
)
numbers = st.integers(min_value=-3, max_value=10**7) | st.floats(allow_nan=True)
near_valid = st.fixed_dictionaries(
    {
        "workload": st.fixed_dictionaries(
            {},
            optional={
                "num_sims": numbers,
                "grid_size": numbers,
                "step_seconds": numbers,
                "trainers": numbers,
                "retries": numbers,
                "seed": numbers,
                "mode": st.sampled_from(["phased", "streaming", "sideways"]),
            },
        ),
        "launcher": st.fixed_dictionaries(
            {"name": st.sampled_from(sorted(plugins.launchers()))},
            optional={"sim_workers": numbers},
        ),
        "transport": st.fixed_dictionaries(
            {"name": st.sampled_from(sorted(plugins.transports()))},
            optional={"data_dir": paths, "shm_dir": paths, "keep_data": st.booleans()},
        ),
    },
    optional={"runs_dir": paths},
)


def accept_or_refuse(load: Any) -> None:
    """``load()`` returns a RunConfig that the checks accept or refuse -- nothing else."""
    try:
        cfg = load()
    except UsageError as exc:
        assert str(exc).strip(), "a refusal must say why"
        return
    assert isinstance(cfg, RunConfig)
    event("valid config")
    with contextlib.suppress(UsageError):
        check_run(cfg)


def _no_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_none(v) for v in value if v is not None]
    return value


@SETTINGS
@given(doc=documents | near_valid)
def test_any_toml_document_loads_or_is_refused(doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        try:
            text = tomli_w.dumps(_no_none(doc))
        except (TypeError, ValueError):
            return  # not representable in TOML (e.g. a nested None)
        path.write_text(text, encoding="utf-8")
        accept_or_refuse(lambda: load_config(path))
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["config.toml"]


@SETTINGS
@given(text=st.text(alphabet=string.printable + "[]=\"'\x00é", max_size=200))
def test_any_text_loads_or_is_refused(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        accept_or_refuse(lambda: load_config(path))


@SETTINGS
@given(workload=values, launcher=values, transport=values, rest=st.dictionaries(keys, values))
def test_any_values_build_or_are_refused(
    workload: Any, launcher: Any, transport: Any, rest: dict[str, Any]
) -> None:
    """``build`` with whatever a caller (or a future CLI path) could hand it."""

    def load() -> RunConfig:
        if not all(isinstance(x, dict) for x in (workload, launcher, transport)):
            raise UsageError("sections must be tables")  # build's callers guarantee dicts
        extra = {k: v for k, v in rest.items() if k not in {"workload", "launcher", "transport"}}
        return build(workload, launcher, transport, **extra)

    accept_or_refuse(load)
