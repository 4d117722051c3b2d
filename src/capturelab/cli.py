"""The ``capturelab`` command line. Each tier registers its own subcommands here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from capturelab import __version__, consent_cli, plan_cli, redact_cli
from capturelab.bench import cli as bench_cli
from capturelab.collector import cli as collector_cli
from capturelab.dataset import cli as dataset_cli
from capturelab.errors import CapturelabError
from capturelab.lab import cli as lab_cli
from capturelab.report import cli as report_cli
from capturelab.sink import cli as sink_cli
from capturelab.train import cli as train_cli
from capturelab.validate import cli as validate_cli

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capturelab",
        description="Consented computer-use telemetry testbed: lab, tiers, validation.",
    )
    parser.add_argument("--version", action="version", version=f"capturelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    lab_cli.register(sub)
    report_cli.register(sub)
    validate_cli.register(sub)
    plan_cli.register(sub)
    redact_cli.register(sub)
    consent_cli.register(sub)
    bench_cli.register(sub)
    sink_cli.register(sub)
    collector_cli.register(sub)
    dataset_cli.register(sub)
    train_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except CapturelabError as exc:
        print(f"capturelab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("capturelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
