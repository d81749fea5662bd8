"""Versioned JSON Schemas of symtool's reports, and validation against them.

Every report carries ``"schema": "symtool/<kind>"`` and ``"schema_version"``; the
schema of each kind ships in ``symtool/schemas/<kind>.json`` (JSON Schema draft
2020-12; docs/reports.md says how the version changes). Validation needs no third-party
package: :func:`validate` implements the subset of draft 2020-12 those files use
(:data:`KEYWORDS`), and the test suite checks it against ``jsonschema`` on valid and
broken reports. The first problem is reported with its JSON path, e.g.
``$.checkpoints[3].layers[0].relations['b-GWA'].alpha``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from symtool.errors import ReportError
from symtool.report.files import SCHEMA_VERSION

#: Report kinds with a shipped schema (``symtool schema KIND``).
KINDS = ("inspect", "align", "symmetry", "ode", "check", "diff")

#: The draft 2020-12 keywords the validator understands; the schemas use no others.
KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$ref",
        "$comment",
        "title",
        "description",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "pattern",
        "minLength",
        "anyOf",
        "if",
        "then",
        "else",
    }
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def available() -> list[str]:
    """Kinds whose schema file ships with this installation, in :data:`KINDS` order."""
    folder = resources.files("symtool.report") / "schemas"
    return [k for k in KINDS if (folder / f"{k}.json").is_file()]


@cache
def _load(kind: str, version: int = SCHEMA_VERSION) -> str:
    name = f"{kind}.json" if version == SCHEMA_VERSION else f"{kind}.v{version}.json"
    path = resources.files("symtool.report") / "schemas" / name
    if kind not in KINDS or not path.is_file():
        if kind in KINDS and version != SCHEMA_VERSION:
            raise ReportError(
                f"$.schema_version: this symtool has no schema for {kind} reports of "
                f"schema_version {version} (it writes version {SCHEMA_VERSION})"
            )
        known = ", ".join(available())
        raise ReportError(f"no schema for report kind {kind!r} (known: {known})")
    return path.read_text(encoding="utf-8")


def load_schema(kind: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of one report kind (``align``, ``symmetry``, ...), as a fresh dict.

    Args:
        kind: the report kind (``symtool/`` prefix allowed).
        version: an older ``schema_version`` reads the kept ``<kind>.v<N>.json``.

    Raises:
        ReportError: no schema ships for ``kind`` (at ``version``).
    """
    return json.loads(_load(kind.removeprefix("symtool/"), version))


def schema_text(kind: str) -> str:
    """The schema file's text, exactly as shipped (what ``symtool schema`` prints)."""
    return _load(kind.removeprefix("symtool/"))


def report_kind(report: Any) -> str:
    """The kind named by a report's ``schema`` field (``symtool/align`` → ``align``).

    Raises:
        ReportError: not an object, no ``schema``, or a foreign or unknown schema name.
    """
    if not isinstance(report, dict):
        raise ReportError(f"$: a report must be a JSON object, not {_type_name(report)}")
    name = report.get("schema")
    if not isinstance(name, str) or not name.startswith("symtool/"):
        raise ReportError(f"$.schema: not a symtool report (schema is {name!r})")
    kind = name.removeprefix("symtool/")
    if kind not in KINDS:
        raise ReportError(f"$.schema: unknown report kind {kind!r} (known: {', '.join(KINDS)})")
    return kind


def validate(report: Any) -> str:
    """Check a report (plain JSON data) against its kind's schema.

    Returns:
        The report's kind.

    Raises:
        ReportError: the first problem, as ``<json path>: <what is wrong>``; a report of a
            newer ``schema_version`` than this symtool reads gets its own message.
    """
    kind = report_kind(report)
    version = report.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ReportError(
            f"$.schema_version: report has schema_version {version}, this symtool reads "
            f"up to {SCHEMA_VERSION} (upgrade symtool)"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReportError(f"$.schema_version: expected a positive integer, got {version!r}")
    schema = load_schema(kind, version)
    for path, message in _errors(report, schema, schema, "$"):
        raise ReportError(f"{path}: {message}")
    return kind


def validate_text(text: str) -> dict[str, Any]:
    """Parse rendered JSON report text and validate it; returns the parsed report.

    Used by the test suite to validate every JSON report a command renders.

    Raises:
        ReportError: not JSON, or not valid against its schema.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"not JSON ({exc})") from None
    validate(data)
    return data


def unknown_keywords(schema: Any) -> set[str]:
    """Keywords used in ``schema`` that :func:`validate` does not implement."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, sub in schema.items():
            if key not in KEYWORDS:
                found.add(key)
            if key in ("properties", "patternProperties", "$defs"):
                for s in sub.values():
                    found |= unknown_keywords(s)
            elif key in ("anyOf", "prefixItems"):
                for s in sub:
                    found |= unknown_keywords(s)
            elif key in (
                "items",
                "additionalProperties",
                "propertyNames",
                "if",
                "then",
                "else",
            ) and isinstance(sub, dict):
                found |= unknown_keywords(sub)
    return found


# ---------------------------------------------------------------------- validator


def _json_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]".replace('"', "'")


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _is_type(v: Any, t: str) -> bool:
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        if isinstance(v, bool):
            return False
        return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    if t == "number":
        return isinstance(v, int | float) and not isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    raise ValueError(f"unknown type {t!r} in schema")


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _errors(v: Any, s: Any, root: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """Every problem of ``v`` against schema ``s``, depth first in document order."""
    if s is True:
        return
    if s is False:
        yield path, "no value is allowed here"
        return
    if "$ref" in s:
        yield from _errors(v, _resolve(root, s["$ref"]), root, path)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is_type(v, t) for t in types):
            got = _type_name(v) if v is None else f"{_type_name(v)} {_short(v)}"
            yield path, f"expected {' or '.join(types)}, got {got}"
            return
    if "const" in s and not _equal(v, s["const"]):
        yield path, f"must be {json.dumps(s['const'])}, got {_short(v)}"
    if "enum" in s and not any(_equal(v, e) for e in s["enum"]):
        yield path, f"must be one of {json.dumps(s['enum'])}, got {_short(v)}"
    if "anyOf" in s:
        yield from _any_of(v, s["anyOf"], root, path)
    if isinstance(v, dict):
        yield from _object(v, s, root, path)
    elif isinstance(v, list):
        yield from _array(v, s, root, path)
    elif isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            yield path, f"must have at least {s['minLength']} characters"
        if "pattern" in s and not re.search(s["pattern"], v):
            yield path, f"{_short(v)} does not match {s['pattern']!r}"
    elif _is_type(v, "number"):
        if "minimum" in s and v < s["minimum"]:
            yield path, f"must be ≥ {s['minimum']}, got {v!r}"
        if "exclusiveMinimum" in s and v <= s["exclusiveMinimum"]:
            yield path, f"must be > {s['exclusiveMinimum']}, got {v!r}"
        if "maximum" in s and v > s["maximum"]:
            yield path, f"must be ≤ {s['maximum']}, got {v!r}"
    if "if" in s:
        branch = s.get("then") if not any(_errors(v, s["if"], root, path)) else s.get("else")
        if branch is not None:
            yield from _errors(v, branch, root, path)


def _any_of(
    v: Any, branches: list[Any], root: dict[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    """anyOf; on failure, explain with the one branch whose type fits (if exactly one)."""
    results = [list(_errors(v, b, root, path)) for b in branches]
    if any(not r for r in results):
        return
    typed = [r for r in results if not (r[0][0] == path and r[0][1].startswith("expected "))]
    if len(typed) == 1:
        yield typed[0][0]
        return
    yield path, f"matches none of the {len(branches)} allowed forms ({results[0][0][1]})"


def _object(
    v: dict[str, Any], s: Any, root: dict[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    props = s.get("properties", {})
    missing = [k for k in s.get("required", []) if k not in v]
    if missing:
        yield path, f"missing required key(s): {', '.join(missing)}"
    patterns = s.get("patternProperties", {})
    extra = s.get("additionalProperties", True)
    names = s.get("propertyNames")
    for key, value in v.items():
        sub = _json_path(path, key)
        if names is not None:
            for _, message in _errors(key, names, root, sub):
                yield sub, f"key not allowed: {message}"
        matched = False
        if key in props:
            matched = True
            yield from _errors(value, props[key], root, sub)
        for pattern, ps in patterns.items():
            if re.search(pattern, key):
                matched = True
                yield from _errors(value, ps, root, sub)
        if not matched:
            if extra is False:
                allowed = ", ".join(props) or "none"
                yield sub, f"unexpected key {key!r} (allowed: {allowed})"
            elif isinstance(extra, dict):
                yield from _errors(value, extra, root, sub)


def _array(v: list[Any], s: Any, root: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    if "minItems" in s and len(v) < s["minItems"]:
        yield path, f"must have at least {s['minItems']} item(s), has {len(v)}"
    if "maxItems" in s and len(v) > s["maxItems"]:
        yield path, f"must have at most {s['maxItems']} item(s), has {len(v)}"
    prefix = s.get("prefixItems", [])
    for i, item in enumerate(v):
        if i < len(prefix):
            yield from _errors(item, prefix[i], root, _json_path(path, i))
        elif "items" in s:
            yield from _errors(item, s["items"], root, _json_path(path, i))


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
