"""User code named on the command line or in ``symtool.toml``: ``module:attribute`` or
``path/to/file.py:attribute`` (model factories, probe sources, losses, custom cells)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from symtool.errors import ModelError


# --------------------------------------------------------------------------- importing
def import_object(spec: str, base_dir: Path | None = None) -> Any:
    """Import ``pkg.module:attr`` or ``path/to/file.py:attr``.

    Args:
        spec: ``module:attribute`` (the attribute may be dotted). A module part ending in
            ``.py`` or containing a path separator is a file, relative to ``base_dir``.
        base_dir: folder file paths are relative to (e.g. the config file's folder);
            the working directory when ``None``.

    Raises:
        ModelError: malformed spec, missing file/module, import failure or missing attribute.
    """
    mod_part, sep, attr = spec.rpartition(":")
    if not sep or not mod_part or not attr:
        raise ModelError(f"expected 'module:attribute' or 'file.py:attribute', got {spec!r}")
    is_file = mod_part.endswith(".py") or "/" in mod_part or "\\" in mod_part
    where: str | Path = mod_part
    if is_file:
        path = Path(mod_part).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        path = path.resolve()
        where = path
        if not path.is_file():
            raise ModelError(f"no such Python file for {spec!r}", path=path)
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(mod_part)
        except ImportError as exc:
            raise ModelError(f"cannot import module {mod_part!r} for {spec!r}: {exc}") from exc
    obj: Any = module
    for name in attr.split("."):
        if not hasattr(obj, name):
            raise ModelError(f"{mod_part} has no attribute {attr!r}", path=where)
        obj = getattr(obj, name)
    return obj


def _import_file(path: Path) -> Any:
    """Import a Python file once per path, under a name derived from the path."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"_symtool_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError("cannot load as a Python module", path=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"importing failed: {type(exc).__name__}: {first}", path=path) from exc
    return module
