"""Every snakemake command the project shows runs as written: `--resources` and `--configfile`
take every following word, so a target placed after them is read as a resource or a config file."""

import re

import pytest

from .workflow_helpers import ROOT

SHOWN = [
    "Snakefile",
    "README.md",
    "config/README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "config/papers").glob("*.yaml")),
]


def shown_commands(text: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"snakemake [^\n`#]*", text)]


def target_after_list_option(command: str) -> bool:
    words = command.split()
    for i, word in enumerate(words):
        if word in ("--resources", "--configfile"):
            rest = words[i + 1 :]
            return any(
                w in ("all", "report")
                for w in rest[: next((j for j, w in enumerate(rest) if w.startswith("-")), len(rest))]
            )
    return False


def test_the_check_finds_a_target_after_a_list_option():
    assert target_after_list_option("snakemake --cores 4 --resources gpu=1 all")
    assert not target_after_list_option("snakemake all --cores 4 --resources gpu=1")


@pytest.mark.parametrize("path", SHOWN)
def test_no_shown_command_puts_a_target_after_resources_or_configfile(path):
    text = (ROOT / path).read_text()
    wrong = [c for c in shown_commands(text) if target_after_list_option(c)]
    # The README names the wrong forms once each, to say why they fail.
    said_why = ("` stops with a parse error", "` reads `all` as a second config file")
    wrong = [c for c in wrong if not any(f"`{c.strip()}{why}" in text for why in said_why)]
    assert wrong == [], f"{path}: a target after --resources or --configfile: {wrong}"
