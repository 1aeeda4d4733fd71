"""JSON Schema (draft-07, what yaml-language-server speaks) of the config, generated from
:mod:`fs_dialplan.spec`, the tables the loader validates with.

``just schema`` writes it; ``config/voicefork.schema.json`` is the committed copy the example
config's ``# yaml-language-server: $schema=`` modeline points at (a test keeps it current).
The schema sees YAML as typed data (``esl_port: 8021`` is an integer, ``+15551234567``
unquoted is a number), the loader sees scalars; where they differ the schema is the
stricter. The cross-field rules below (one of number/pattern, fallback needs, trunk
credentials) mirror the loader's by hand; tests feed both the same broken configs.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from . import spec

__all__ = ["build_schema", "schema_text"]

_UNSAFE = r"\$\{|" + spec.UNSAFE_CHARS  # the loader's "${ or control characters"
_SAFE_REF = {"$ref": "#/definitions/safe_string"}


def _str_schema(key: spec.Key) -> dict[str, Any]:
    if key.enum:
        return {"enum": list(key.enum)}
    s: dict[str, Any] = {"type": "string", "allOf": [_SAFE_REF]}
    if key.pattern:
        s["pattern"] = key.pattern
    if key.json_types != ("string",):
        s = {"anyOf": [s] + [{"type": t} for t in key.json_types if t != "string"]}
    if key.none_words:
        # YAML's null (an empty value, ~, null) only where the loader takes it as "not set".
        nulls = [{"type": "null"}] if {"", "null", "~"} & set(key.none_words) else []
        s = {"anyOf": [*nulls, {"enum": list(key.none_words)}, s]}
    return s


def _key_schema(key: spec.Key) -> dict[str, Any]:
    kind = key.kind
    if kind == "str":
        s = _str_schema(key)
    elif kind == "int":
        s = {"type": "integer", "minimum": int(key.lo), "maximum": int(key.hi)}  # type: ignore[arg-type]
        if key.step:
            s["multipleOf"] = key.step
    elif kind == "seconds":
        s = {"anyOf": [{"type": "number", "minimum": key.lo, "maximum": key.hi},
                       {"type": "string", "pattern": spec.DURATION}]}
    elif kind == "bool":
        s = {"anyOf": [{"type": "boolean"}, {"enum": list(spec.TRUE_WORDS + spec.FALSE_WORDS)}]}
    elif kind == "rate":
        s = {"enum": list(key.enum) + sorted(set(spec.RATES.values()) - {spec.AUTO_RATE})}
    elif kind == "map":
        s = _object(key.keys)  # type: ignore[arg-type]
        if key.literal is not None:
            s = {"anyOf": [{"const": key.literal}, s]}
    elif kind == "names":
        s = {"type": "object", "additionalProperties": _key_schema(key.items)}  # type: ignore[arg-type]
    elif kind == "list":
        s = {"type": "array", "items": _key_schema(key.items)}  # type: ignore[arg-type]
        if key.min_items:
            s["minItems"] = key.min_items
    elif kind == "json":
        s = {"type": "object"}
    else:  # pragma: no cover - a spec typo
        raise ValueError(f"unknown key kind {kind!r}")
    return {"description": key.help, **s}


def _object(keys: Mapping[str, spec.Key]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": "object",
        "properties": {name: _key_schema(k) for name, k in keys.items()},
        "additionalProperties": False,
    }
    required = [name for name, k in keys.items() if k.required]
    if required:
        s["required"] = required
    s.update(_rules(keys))
    return s


def _when(key: str, values: list[Any], then: list[str]) -> dict[str, Any]:
    return {"if": {"properties": {key: {"enum": values}}, "required": [key]}, "then": {"required": then}}


def _rules(keys: Mapping[str, spec.Key]) -> dict[str, Any]:
    """Cross-field rules of a section, as the loader states them (fs_dialplan/loader.py)."""
    if keys is spec.ROUTE:
        return {"oneOf": [{"required": ["number"]}, {"required": ["pattern"]}]}
    if keys is spec.FALLBACK:
        return {"allOf": [_when("action", ["play"], ["file"]), _when("action", ["transfer"], ["target"])]}
    if keys is spec.TRUNK:
        return {"dependencies": {"username": ["password_env"], "password_env": ["username"]},
                "allOf": [_when("register", [True, *spec.TRUE_WORDS], ["username", "password_env"])]}
    return {}


def build_schema() -> dict[str, Any]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "voicefork config",
        "description": "One YAML file: which phone number goes to which voice-AI connector (config/voicefork.yaml).",
        **_object(spec.TOP),
        "definitions": {
            "safe_string": {"type": "string", "not": {"pattern": _UNSAFE},
                            "description": 'No "${" (FreeSWITCH would expand it) and no control characters.'},
        },
    }


def schema_text() -> str:
    """The schema as written to disk: stable key order, two-space indent, final newline."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"
