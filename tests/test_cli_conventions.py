"""What a user expects of any command line: help, version, choices, defaults, JSON, quiet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from simferry import __version__, plugins
from simferry.cli import main, make_parser

TINY = ["--num-sims", "2", "--grid-size", "16", "--step-seconds", "0"]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = make_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_version_and_help_on_a_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"simferry {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: simferry" in out and "compare" in out and "examples:" in out
    assert "The ``simferry`` command" not in out


def test_every_argument_has_help_and_a_readable_default() -> None:
    for name, parser in subparsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {flag}: no help"
            assert "(default: )" not in action.help, f"{name} {flag}: empty default"
        text = parser.format_help()
        assert "4194304" not in text, f"{name}: bytes as a raw number"
    run_help = subparsers()["run"].format_help()
    assert "--mode {phased,streaming}" in run_help, "choices are shown"
    assert "{dragon,local,parsl}" in run_help
    assert "4MiB" in run_help


def test_underscore_spellings_are_the_reference_scripts_flags_only() -> None:
    underscored = {
        flag
        for parser in subparsers().values()
        for action in parser._actions
        for flag in action.option_strings
        if "_" in flag
    }
    assert underscored == {"--num_sims", "--grid_size"}


@pytest.mark.parametrize("command", ["run", "compare", "sweep"])
def test_every_command_that_runs_work_takes_config_json_and_quiet(command: str) -> None:
    flags = {f for a in subparsers()[command]._actions for f in a.option_strings}
    assert {"--config", "--json", "--quiet"} <= flags
    assert "--repeat" in flags or command == "run"


def test_shell_completion_for_bash_and_zsh(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh"):
        with pytest.raises(SystemExit) as info:
            main(["--print-completion", shell])
        assert info.value.code == 0
        script = capsys.readouterr().out
        assert "simferry" in script and "--num-sims" in script and "compare" in script


def test_doctor_fails_when_the_default_demo_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["demo_ready"] is True and found["transports"]["filesystem"] == "ok"
    shm = plugins.transport_config_class("shm")
    monkeypatch.setattr(shm, "unavailable_reason", lambda self: "no tmpfs here")
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert "transport shm         unavailable: no tmpfs here" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "needs the shm transport" in err[0], err


@pytest.mark.integration
def test_quiet_prints_nothing_and_json_prints_only_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--transport", "futures", *TINY, "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["run", "--transport", "futures", *TINY, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["summary"]["status"] == "ok" and Path(result["run_dir"]).is_dir()
    assert captured.err == ""


@pytest.mark.integration
def test_compare_repeats_each_transport_and_takes_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--transport", "futures", *TINY, "--seed", "7", "--json"]) == 0
    config = Path(json.loads(capsys.readouterr().out)["run_dir"]) / "config.toml"
    argv = ["compare", "--config", str(config), "--transports", "futures,shm", "--repeat", "2"]
    assert main([*argv, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(r["transport"] for r in runs) == ["futures", "futures", "shm", "shm"]
    assert {(r["status"], r["num_sims"], r["grid_size"]) for r in runs} == {("ok", 2, 16)}


def test_a_sweep_starts_every_point_from_its_config(tmp_path: Path) -> None:
    import tomli_w

    from simferry.cli.sweep import grid, run_options
    from simferry.config import build
    from simferry.records import drop_none

    cfg = build(
        {"num_sims": 3, "grid_size": 24, "step_seconds": 0}, {"name": "local"}, {"name": "shm"}
    )
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(drop_none(cfg.dump())), encoding="utf-8")
    args = make_parser().parse_args(["sweep", "--config", str(path), "--grid-size", "16,32"])
    points = grid(args)
    assert [(p.launcher, p.transport, p.num_sims, p.grid_size) for p in points] == [
        ("local", "shm", 3, 16),
        ("local", "shm", 3, 32),
    ]
    assert run_options(args, points)["step_seconds"] == 0
