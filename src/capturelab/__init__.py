"""capturelab: a reproducible testbed for consented computer-use telemetry."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("capturelab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
