"""The ``symtool`` command line (:mod:`.app` registers every command)."""

from symtool.cli.app import main

__all__ = ["main"]
