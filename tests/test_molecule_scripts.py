"""The Python that molecule verifiers write onto a node runs here too, against this checkout.

A verifier that ships a script (a dataset build, a producer) learns of an API change only when its
scenario runs, late in CI; these tests run the same script text on the controller, in the unit phase.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _verifier(role: str) -> ModuleType:
    path = ROOT / "roles" / role / "molecule" / "default" / "tests" / f"test_{role}.py"
    spec = importlib.util.spec_from_file_location(f"molecule_{role}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_processing_node_build_script_builds_a_dataset(tmp_path: Path) -> None:
    script = tmp_path / "build.py"
    script.write_text(_verifier("processing_node").BUILD)
    (tmp_path / "work").mkdir()
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "work"), str(tmp_path / "datasets")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    dataset = Path(out.stdout.strip().splitlines()[-1])
    assert dataset.parent == tmp_path / "datasets"
    assert (dataset / "train.jsonl").stat().st_size > 0
    assert (dataset / "eval.jsonl").stat().st_size > 0
