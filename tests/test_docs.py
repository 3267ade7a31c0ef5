"""The README says what the code does: its generated sections are current, and every command
line it shows parses with the CLI as built (flags come from the configuration's fields)."""

import re
import shlex
from pathlib import Path

import pytest

from sweep import docs
from sweep.cli import COMMANDS, build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_generated_sections_are_current():
    text = README.read_text("utf-8")
    assert docs.rendered(text) == text, "run `python -m sweep.docs` to regenerate the README"


def commands(text: str) -> list[list[str]]:
    """The argument lists of every `run_sweep.py` / `llm-memory-sweep` command in the
    README's shell blocks (continuation lines joined, comments and `&` dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words):
                if word.endswith("run_sweep.py") or word == "llm-memory-sweep":
                    argv = [w for w in words[start + 1:] if w != "&"]
                    if "&&" in argv:
                        argv = argv[:argv.index("&&")]
                    out.append(argv)
                    break
    return out


README_COMMANDS = commands(README.read_text("utf-8"))


def test_the_readme_shows_commands():
    assert len(README_COMMANDS) >= 10
    assert any(argv[:1] == ["explain"] for argv in README_COMMANDS)


@pytest.mark.parametrize("argv", README_COMMANDS, ids=" ".join)
def test_readme_command_parses(argv):
    if not argv or argv[0] not in COMMANDS and not argv[0].startswith("-h"):
        argv = ["run", *argv]
    build_parser().parse_args(argv)  # an unknown flag exits with status 2
