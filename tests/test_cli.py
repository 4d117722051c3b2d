"""The console script: version, help, and bad input that exits 2 with the culprit named."""

from __future__ import annotations

import subprocess
from pathlib import Path

from capturelab import __version__
from capturelab.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_version_console_script(tool_env: dict[str, str]):
    out = subprocess.run(
        ["capturelab", "--version"], env=tool_env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"capturelab {__version__}"
    assert __version__ != "0.0.0+unknown"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_missing_inventory_exits_2(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["lab", "status", "--inventory", "inventory/nope"]) == 2
    assert "inventory/nope does not exist" in capsys.readouterr().err
