"""The `refinery` console script: --help everywhere, config errors exit 2 with a key path."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import build_parser, main


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommand_paths(sub, (*prefix, name))


def test_console_script_help_lists_subcommands() -> None:
    script = Path(sys.executable).with_name("refinery")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "run", "config", "model", "bench"):
        assert command in result.stdout


@pytest.mark.parametrize("path", list(_subcommand_paths(build_parser())), ids=" ".join)
def test_every_subcommand_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: refinery " + " ".join(path))


def test_config_error_exits_2_with_key_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "logs.yaml"
    cfg.write_text("runtime:\n  tracking:\n    experimnt: x\n")
    assert main(["config", "check", "logs", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: runtime.tracking.experimnt: unknown key" in err


def test_run_without_input_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "logs.yaml"
    cfg.write_text("output: out\n")
    assert main(["run", "logs", "--config", str(cfg)]) == 2
    assert "input: required" in capsys.readouterr().err


def test_model_tiny_builds_into_the_named_directory(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    assert main(["model", "tiny", "--output", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("verb", ["run", "submit"])
def test_run_and_submit_take_the_same_job_flags(verb: str) -> None:
    from jobs.batch import BATCH_JOBS, load_batch_config
    from jobs.commands.common import apply_job_flags

    args = build_parser().parse_args([verb, "reindex", "--full", "--set", "input=corpus"])
    cfg = load_batch_config(BATCH_JOBS["reindex"], args.config, "local", args.overrides)
    assert not cfg.reindex.full
    apply_job_flags(args, cfg)
    assert cfg.reindex.full


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gates", '{"max_p99_s": -1}'], "gates.max_p99_s: Input should be greater than 0"),
        (["--fault", '{"abort_percent": 120}'], "fault.abort_percent"),
        (["--steps", "50,10"], "steps must be strictly increasing"),
    ],
)
def test_a_canary_rollouts_mistake_is_one_clear_line_before_any_cluster(
    flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["canary", "rollout", "--to", "v2", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
