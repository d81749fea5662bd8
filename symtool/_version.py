"""The installed package's version (read once; imported by reports and the CLI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("symtool")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
