"""One error base class; the CLI turns it into one line and an exit code.

Exit codes, defined here and nowhere else (README lists them): 0 ok, 1 a check failed or
some checkpoint/layer failed while others were analysed, 2 bad usage or bad input, 3 an
internal error (a bug), 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class SymtoolError(Exception):
    """Base for every error symtool reports to users as one line.

    Args:
        message: what is wrong, in one line.
        path: the file the problem is in, if any; shown first.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UsageError(SymtoolError):
    """A bad option value or combination."""


class CheckpointError(SymtoolError):
    """A checkpoint cannot be found, read or trusted."""


class PickleRefused(CheckpointError):
    """A .pt file needs full unpickling and --trust-pickle was not given."""


class ConfigError(SymtoolError):
    """symtool.toml is malformed or names unknown keys."""


class ModelError(SymtoolError):
    """The model cannot be built, or a state dict does not fit it."""


class ProbeError(SymtoolError):
    """Probe data is missing, malformed, or does not fit the model."""


class AnalysisError(SymtoolError):
    """An analysis cannot run on this input (recorded per layer, not fatal)."""


class ReportError(SymtoolError):
    """A report is malformed or a requirement expression is invalid."""
