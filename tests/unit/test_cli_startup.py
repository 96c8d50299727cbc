"""`remsguard --help` imports no command: none of the heavy libraries, and its help lines are
the commands' own (`entrypoints/cli.py` lists them by name, `entrypoints/lazy.py`)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import typer

from remsguard.entrypoints.cli import COMMANDS
from remsguard.entrypoints.lazy import LazyCommand

HEAVY = (
    "fastapi",
    "uvicorn",
    "alembic",
    "sqlalchemy",
    "faust",
    "aiokafka",
    "kafka",
    "matplotlib",
    "reportlab",
    "fhir",
    "remsguard.fhir",
    "remsguard.adapters.storage",
)


def test_help_imports_no_heavy_library() -> None:
    probe = (
        "import sys\n"
        "from remsguard.entrypoints.cli import main\n"
        "sys.argv = ['remsguard', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]


@pytest.mark.parametrize("entry", COMMANDS, ids=lambda entry: entry.name)
def test_help_line_is_the_commands_own(entry: LazyCommand) -> None:
    module_name, _, attribute = entry.target.partition(":")
    found = getattr(__import__(module_name, fromlist=[attribute]), attribute)
    own = found.info.help if isinstance(found, typer.Typer) else inspect.getdoc(found)
    assert isinstance(own, str)
    first_paragraph = " ".join(own.split("\n\n")[0].split())
    assert entry.help == first_paragraph
