"""The XML dialplan, read back from the RENDERED files (issue 4: a rendering bug must break e2e).

Subset of mod_dialplan_xml that the rendered dialplan uses: ``<extension>`` with one or more
``<condition field=... expression=...>`` (all must match, first matching extension wins)
and ``<action application=... data=...>`` children, run in document order. ``$1``… in
``data`` take the captures of the condition they sit in, as FreeSWITCH does.
Not emulated (not used by our templates): ``anti-action``, ``continue="true"``, ``break``
modes other than on-false, time-of-day conditions, inline execution.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .expand import preprocess

__all__ = ["Action", "Extension", "Dialplan", "DialplanError"]


class DialplanError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Action:
    application: str
    data: str


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    expression: re.Pattern[str] | None
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class Extension:
    name: str
    conditions: tuple[Condition, ...]

    def match(self, fields: dict[str, str]) -> list[Action] | None:
        actions: list[Action] = []
        for cond in self.conditions:
            captures: tuple[str, ...] = ()
            if cond.expression is not None:
                m = cond.expression.search(fields.get(cond.field, ""))
                if m is None:
                    return None
                captures = tuple(g or "" for g in m.groups())
            for a in cond.actions:
                data = a.data
                for k in range(len(captures), 0, -1):  # $10 before $1
                    data = data.replace(f"${k}", captures[k - 1])
                actions.append(Action(a.application, data))
        return actions


class Dialplan:
    def __init__(self, extensions: list[Extension]) -> None:
        self.extensions = extensions

    @classmethod
    def load(cls, path: str | Path, globals_: dict[str, str] | None = None) -> "Dialplan":
        """Load one file or every ``*.xml`` in a directory, in name order (as X-PRE-PROCESS include);
        preprocessor ``set`` lines update ``globals_``."""
        p = Path(path)
        files = sorted(p.glob("*.xml")) if p.is_dir() else [p]
        exts: list[Extension] = []
        for f in files:
            text = preprocess(f.read_text(encoding="utf-8"), globals_ if globals_ is not None else {})
            try:
                root = ET.fromstring(text)
            except ET.ParseError as e:
                raise DialplanError(f"{f}: not well-formed XML: {e}") from None
            for ext in root.iter("extension"):
                exts.append(cls._extension(f, ext))
        return cls(exts)

    @staticmethod
    def _extension(f: Path, ext: ET.Element) -> Extension:
        conds = []
        for c in ext.findall("condition"):
            field, expr = c.get("field"), c.get("expression")
            try:
                pattern = re.compile(expr) if field and expr is not None else None
            except re.error as e:
                raise DialplanError(f"{f}: extension {ext.get('name')}: bad expression {expr!r}: {e}") from None
            actions = tuple(
                Action(a.get("application", ""), a.get("data", "")) for a in c.findall("action")
            )
            conds.append(Condition(field or "", pattern, actions))
        return Extension(ext.get("name", ""), tuple(conds))

    def route(self, fields: dict[str, str]) -> tuple[str, list[Action]] | None:
        for ext in self.extensions:
            actions = ext.match(fields)
            if actions is not None:
                return ext.name, actions
        return None
