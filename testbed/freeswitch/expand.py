"""Channel variable expansion of dialplan action data, as FreeSWITCH does it.

``${name}`` is the channel variable (empty when unset); ``${api(args)}`` runs the API
command ``api`` with the expanded ``args`` and is replaced by its output (REF: the rendered
``fork_result=${uuid_audio_fork(${uuid} start ...)}`` becomes ``+OK Success`` and a newline).
Braces nest, so compact JSON metadata inside the call expands intact.

``$${name}`` is the XML preprocessor's global variable: FreeSWITCH replaces it when it loads
the XML, so the emulator does too, in :func:`preprocess` (assumption: an unknown global
expands to nothing). The preprocessor also runs ``<X-PRE-PROCESS cmd="set" data="name=value"/>``
lines, which set a global and leave nothing in the XML (switch_xml.c ``preprocess``: line by
line, ``data`` read as raw text up to the next quote, no entity decoded). Backslash handling inside expansion is not in REF; ``\\$`` keeps a
literal ``$`` (assumption).
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["expand", "preprocess", "ExpansionError"]

MAX_DEPTH = 16


class ExpansionError(ValueError):
    pass


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` whose ``{`` is at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ExpansionError(f"unterminated ${{ in {text!r}")


def expand(
    text: str,
    var: Callable[[str], str | None],
    api: Callable[[str, str], str],
    depth: int = 0,
) -> str:
    if depth > MAX_DEPTH:
        raise ExpansionError("expansion nested too deep")
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if ch == "$" and text.startswith("${", i):
            end = _closing(text, i + 1)
            inner = text[i + 2 : end]
            paren = inner.find("(")
            if paren > 0 and inner.endswith(")"):
                func = inner[:paren]
                args = expand(inner[paren + 1 : -1], var, api, depth + 1)
                out.append(api(func, args))
            else:
                out.append(var(expand(inner, var, api, depth + 1)) or "")
            i = end + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_PRE_SET = re.compile(r'<X-PRE-PROCESS\s+cmd="set"\s+data="([^"]*)"\s*/>', re.IGNORECASE)


def preprocess(text: str, globals_: dict[str, str]) -> str:
    """The XML preprocessor at load time: ``set`` lines into ``globals_``, then ``$${name}``."""
    lines = []
    for line in text.splitlines(keepends=True):
        m = _PRE_SET.search(line)
        if m is None:
            lines.append(line)
            continue
        name, eq, value = m.group(1).partition("=")
        if eq:
            globals_[name] = value
    text = "".join(lines)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            end = text.find("}", i + 3)
            if end < 0:
                raise ExpansionError("unterminated $${")
            out.append(globals_.get(text[i + 3 : end], ""))
            i = end + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)
