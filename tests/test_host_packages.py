"""Every program the harness, the tests and the suites run here is installed by the project.

A fresh machine has only what the project installs: the venv (pyproject.toml) and the Debian
packages of ``engine.HOST_PACKAGES`` (the engine step, before the unit tests). This reads the
code that runs on this machine (``tests/``, ``validation/``, ``src/capturelab/lab/``) and
collects each external program it calls: ``shutil.which("x")`` and the first word of an argv
literal given to ``subprocess`` (``run``, ``Popen``, ``check_output``, ...), to the harness's
``run``/``succeeds``, or bound to a name such as ``argv``/``cmd``. A program found nowhere fails
the test with the file and line that calls it.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capturelab.cli import build_parser
from capturelab.lab import engine

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "validation", "src/capturelab/lab")
LAUNCHERS = {"run", "Popen", "check_output", "check_call", "call", "succeeds"}
ARGV_NAMES = {"argv", "cmd", "command"}
# Console scripts of the venv (pyproject.toml's dependencies and capturelab's own entry point).
VENV_PROGRAMS = {"ansible-playbook", "ansible-inventory", "capturelab", "pyinfra", "molecule"}


def _program(node: ast.expr) -> str | None:
    """The first word of an argv literal (``["x", ...]``), if it is a plain string."""
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _which_names(node: ast.AST) -> Iterator[str]:
    """``shutil.which("x")``, and ``shutil.which(t) for t in ("x", "y")``."""
    if isinstance(node, ast.Call) and _called_name(node) == "which" and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value
    if isinstance(node, ast.GeneratorExp | ast.ListComp | ast.SetComp):
        calls_which = any(
            isinstance(n, ast.Call) and _called_name(n) == "which" for n in ast.walk(node.elt)
        )
        for gen in node.generators:
            if calls_which and isinstance(gen.iter, ast.List | ast.Tuple):
                for elt in gen.iter.elts:
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                        yield elt.value


def programs_called(source: str) -> Iterator[tuple[str, int]]:
    """(program, line) for every external program ``source`` runs or looks up."""
    for node in ast.walk(ast.parse(source)):
        found: list[str] = list(_which_names(node))
        if isinstance(node, ast.Call) and _called_name(node) in LAUNCHERS and node.args:
            found += [p for p in [_program(node.args[0])] if p]
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ARGV_NAMES for t in node.targets
        ):
            found += [p for p in [_program(node.value)] if p]
        for program in found:
            yield program, getattr(node, "lineno", 0)


def scan(repo: Path) -> dict[str, list[str]]:
    """Program -> the places (``file:line``) that call it, over the scanned folders."""
    calls: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in sorted((repo / folder).rglob("*.py")):
            for program, line in programs_called(path.read_text()):
                calls.setdefault(program, []).append(f"{path.relative_to(repo)}:{line}")
    return calls


def cli_subcommands() -> set[str]:
    """``capturelab``'s own subcommands: an argv starting with one is run in-process (main)."""
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in actions for name in action.choices}


def installed_by_project() -> dict[str, str]:
    """Program -> what installs it (a Debian package of the engine step, or the venv)."""
    owners = {prog: pkg for pkg, progs in engine.HOST_PACKAGES.items() for prog in progs}
    owners.update(dict.fromkeys(VENV_PROGRAMS, "the venv"))
    return owners


def test_the_scan_finds_the_programs_we_know_are_called():
    calls = scan(REPO)
    # One of each form: an argv to run(), shutil.which in a generator, an argv bound to a name.
    for program in ("docker", "mcopy", "mformat", "qemu-system-x86_64", "java", "ansible-playbook"):
        assert program in calls, f"the scan missed {program}"


def test_every_program_called_is_installed_by_the_project():
    owners = installed_by_project()
    in_process = cli_subcommands()
    unowned = {
        prog: places
        for prog, places in scan(REPO).items()
        if prog not in owners and prog not in in_process
    }
    assert not unowned, "programs nothing installs (add their Debian package to " + (
        "engine.HOST_PACKAGES): "
        + "; ".join(
            f"{prog} (called at {', '.join(places[:3])})" for prog, places in unowned.items()
        )
    )


def test_venv_programs_are_in_the_venv():
    bindir = Path(sys.executable).parent
    missing = [p for p in sorted(VENV_PROGRAMS) if not (bindir / p).exists()]
    assert not missing, f"not in the venv ({bindir}): {missing}; add them to pyproject.toml"


def test_a_program_outside_every_package_is_reported(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import shutil, subprocess\n"
        "subprocess.run(['frobnicate', '--now'], check=True)\n"
        "OK = all(shutil.which(t) for t in ('mcopy', 'zapper'))\n"
        "argv = ['qemu-img', 'create']\n"
    )
    calls = scan(tmp_path)
    assert calls == {
        "frobnicate": ["tests/test_x.py:2"],
        "mcopy": ["tests/test_x.py:3"],
        "zapper": ["tests/test_x.py:3"],
        "qemu-img": ["tests/test_x.py:4"],
    }
    owners = installed_by_project()
    assert sorted(p for p in calls if p not in owners) == ["frobnicate", "zapper"]


@pytest.mark.skipif(
    not Path("/etc/debian_version").exists(), reason="the package map is of Debian packages"
)
def test_each_mapped_program_is_on_path_after_the_engine_step():
    """The engine step ran before the unit tests (make test): every mapped program is here."""
    missing = [
        f"{prog} ({pkg})"
        for pkg, progs in engine.HOST_PACKAGES.items()
        for prog in progs
        if shutil.which(prog) is None
    ]
    assert not missing, f"not installed although mapped: {missing} (run `make engine`)"
