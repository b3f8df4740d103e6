"""The exit codes of `vae` have one home, vaesdk.base.errors (each error class's `exit_code`
and EXIT_CODES): the command exits with them, `vae --help` lists them from there, and the
table in docs/cli.md says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vaesdk
from vaesdk.base import errors
from vaesdk.cli import main

ROOT = Path(__file__).resolve().parents[1]


def docs_table() -> dict[int, tuple[str, set[str]]]:
    """code -> (meaning, error class names) from the table under '## Exit codes' in docs/cli.md."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1], set(re.findall(r"`(\w+Error)`", cells[2])))
    return rows


def test_every_error_class_has_a_listed_exit_code():
    for cls in errors.error_classes():
        assert cls.exit_code in errors.EXIT_CODES, cls.__name__
    assert list(errors.EXIT_CODES) == sorted(errors.EXIT_CODES)


def test_the_docs_table_is_the_exit_codes_of_errors_py():
    table = docs_table()
    assert sorted(table) == sorted(errors.EXIT_CODES), "docs/cli.md's exit codes are not those of vaesdk/base/errors.py"
    for code, (meaning, classes) in table.items():
        assert meaning.lower().startswith(errors.EXIT_CODES[code].lower()), f"{code}: {meaning!r} vs {errors.EXIT_CODES[code]!r}"
        want = {cls.__name__ for cls in errors.error_classes() if cls.exit_code == code}
        assert classes == want, f"exit code {code}: docs/cli.md names {sorted(classes)}, errors.py {sorted(want)}"


def test_vae_help_lists_the_exit_codes_from_their_home():
    r = CliRunner().invoke(main.app, ["--help"], env={"COLUMNS": "2000"})
    assert r.exit_code == errors.EXIT_SUCCESS
    shown = " ".join(r.output.replace("│", " ").split())
    for code, meaning in errors.EXIT_CODES.items():
        assert f"{code} {meaning}" in shown
    assert "0 success" not in (main.__doc__ or ""), "cli/main.py's docstring keeps its own copy of the exit codes"


@pytest.mark.parametrize("cls", errors.error_classes(), ids=lambda cls: cls.__name__)
def test_the_command_exits_with_the_code_of_the_error(monkeypatch, cls):
    def fail() -> list[str]:
        raise cls("broken on purpose")

    monkeypatch.setattr(vaesdk, "list_models", fail)
    r = CliRunner().invoke(main.app, ["models"])
    assert r.exit_code == cls.exit_code and "vae: error: broken on purpose" in r.output
