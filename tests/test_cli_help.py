"""`sparsecl <command> --help` describes every option and shows the command as the workflow runs it."""

import pytest
import typer
from typer.testing import CliRunner

from sparsecl.cli import app


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):  # a group of sub-commands
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_workflow_stage_has_a_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"train", "evaluate", "summarize", "report", "run-config", "data prepare", "data scenario"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_a_commands_help_describes_every_option_and_shows_an_example(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="sparsecl")
    assert result.exit_code == 0, result.output
    for param in command.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), f"sparsecl {' '.join(path)}: {param.name} has no help"
    example = result.output.split("Example", 1)
    assert len(example) == 2, f"sparsecl {' '.join(path)} --help shows no example"
    assert f"sparsecl {' '.join(path)} " in example[1]
