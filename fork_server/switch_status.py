"""What ``GET /freeswitch/status`` serves: the switch's ``version`` and ``status`` API replies,
parsed (no I/O here; the app polls, see ``App._switch_status_loop``).

``status`` on a real 1.10.12 answers (seen 2026-12-07, tests/freeswitch/test_real_status.py)::

    UP 0 years, 0 days, 0 hours, 0 minutes, 1 second, 837 milliseconds, 522 microseconds
    FreeSWITCH (Version 1.10.12-release  64bit) is ready
    1 session(s) since startup
    1 session(s) - peak 1, last 5min 1
    0 session(s) per Sec out of max 100, peak 0, last 5min 0
    500 session(s) max
    min idle cpu 0.00/100.00
    Current Stack Size/Max 240K/8192K

and ``version`` "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)".

Only numbers and the version string are kept (at most 200 printable characters): nothing from
the switch's reply is served raw.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_status", "parse_version"]

_MAX_TEXT = 200
_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_PATTERNS = {
    "sessions": re.compile(r"^(\d+) session\(s\) - peak (\d+)", re.M),
    "sessions_since_start": re.compile(r"^(\d+) session\(s\) since startup", re.M),
    "sessions_max": re.compile(r"^(\d+) session\(s\) max", re.M),
    "sessions_per_second_max": re.compile(r"session\(s\) per Sec out of max (\d+)", re.M),
}
_UPTIME = re.compile(r"^UP (\d+) years?, (\d+) days?, (\d+) hours?, (\d+) minutes?, (\d+) seconds?", re.M)
_READY = re.compile(r"^FreeSWITCH \(.*\) is (ready|not ready)", re.M)


def _text(value: str) -> str:
    return _PRINTABLE.sub("", value.strip())[:_MAX_TEXT]


def parse_version(reply: str) -> str | None:
    """``version``'s first line, if it is one."""
    line = reply.strip().splitlines()[0] if reply.strip() else ""
    return _text(line) if line.startswith("FreeSWITCH Version") else None


def parse_status(reply: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = _PATTERNS["sessions"].search(reply)
    if m:
        out["sessions"], out["sessions_peak"] = int(m.group(1)), int(m.group(2))
    for key in ("sessions_since_start", "sessions_max", "sessions_per_second_max"):
        m = _PATTERNS[key].search(reply)
        if m:
            out[key] = int(m.group(1))
    m = _UPTIME.search(reply)
    if m:
        y, d, h, mi, s = (int(g) for g in m.groups())
        out["uptime_s"] = (((y * 365 + d) * 24 + h) * 60 + mi) * 60 + s
    m = _READY.search(reply)
    if m:
        out["ready"] = m.group(1) == "ready"
    return out
