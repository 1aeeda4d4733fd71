"""``POST /v1/calls``: the request body, checked (sans-I/O).

Nothing a request holds reaches FreeSWITCH except what passed a pattern here: ``to`` and
``from`` as E.164 (``+`` and 7-15 digits), ``route``, ``trunk`` and ``switch`` as names the
config holds, ``timeout`` as whole seconds in a range. ``metadata`` never reaches the switch
at all: the fork server keeps it and hands it to the connector in ``start``. Every refusal is
a :class:`RequestError` naming the field and why, which the API returns as a 400.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Final, Mapping

__all__ = ["CallRequest", "RequestError", "parse_request", "MAX_BODY_BYTES", "MAX_METADATA_KEYS",
           "MAX_METADATA_VALUE_CHARS", "TIMEOUT_RANGE_S", "E164"]

E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
MAX_BODY_BYTES: Final = 4096
MAX_METADATA_KEYS: Final = 16
MAX_METADATA_VALUE_CHARS: Final = 256
TIMEOUT_RANGE_S: Final = (5, 120)
_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_FIELDS: Final = frozenset({"to", "from", "route", "trunk", "timeout", "metadata", "switch"})


class RequestError(ValueError):
    """A request the API refuses: ``status`` (400, 413 or 415), the ``field`` at fault (or None)."""

    def __init__(self, field: str | None, message: str, status: int = 400) -> None:
        super().__init__(field, message, status)
        self.field = field
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True, slots=True)
class CallRequest:
    to: str
    from_: str
    route: str
    trunk: str
    timeout_s: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    switch: str | None = None  # several switches: the one asked for; None: any healthy one


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _name(doc: Mapping[str, Any], key: str, known: Collection[str], what: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or value not in known:
        choices = ", ".join(sorted(known)[:20])
        raise RequestError(key, f"expected one of the configured {what} ({choices}), got {_show(value)}")
    return value


def _number(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise RequestError(key, "required (an E.164 number like +15551234567)")
    if not isinstance(value, str) or not E164.fullmatch(value):
        raise RequestError(key, f"expected E.164 like +15551234567 (a +, then 7-15 digits), got {_show(value)}")
    return value


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError("metadata", f"expected a JSON object, got {_show(value)}")
    if len(value) > MAX_METADATA_KEYS:
        raise RequestError("metadata", f"at most {MAX_METADATA_KEYS} keys, got {len(value)}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not _KEY.fullmatch(k):
            raise RequestError("metadata", f"key {_show(k)}: expected 1-64 of letters, digits, _ . - (not starting with a digit)")
        if isinstance(v, str):
            if len(v) > MAX_METADATA_VALUE_CHARS:
                raise RequestError(f"metadata.{k}", f"a string of at most {MAX_METADATA_VALUE_CHARS} characters, got {len(v)}")
        elif isinstance(v, float) and not math.isfinite(v):
            raise RequestError(f"metadata.{k}", "a finite number")
        elif v is not None and not isinstance(v, (bool, int, float)):
            raise RequestError(f"metadata.{k}", f"a string, number, boolean or null, got {type(v).__name__ if not isinstance(v, (list, dict)) else ('an array' if isinstance(v, list) else 'an object')}")
        out[k] = v
    return out


def parse_request(
    body: bytes,
    content_type: str | None,
    *,
    routes: Collection[str],
    trunks: Collection[str],
    default_trunk: str | None,
    default_timeout_s: float,
    switches: Collection[str] = (),
) -> CallRequest:
    """The checked request, or :class:`RequestError`. ``switches``: the switch names when there
    are several (a request may then name one); empty: one switch, and ``switch`` is refused."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(None, f"the body is over {MAX_BODY_BYTES} bytes", 413)
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(None, f"expected Content-Type application/json, got {_show(ctype or None)}", 415)
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError(None, "the body is not valid UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise RequestError(None, f"expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise RequestError(unknown[0][:64], f"unknown field; the fields are {', '.join(sorted(_FIELDS))}")
    to = _number(doc, "to")
    from_ = _number(doc, "from")
    if "route" not in doc:
        raise RequestError("route", "required (the route whose connector takes the call)")
    route = _name(doc, "route", routes, "routes")
    if "trunk" in doc:
        trunk = _name(doc, "trunk", trunks, "trunks")
    elif default_trunk is not None:
        trunk = default_trunk
    else:
        raise RequestError("trunk", "required (the config has no outbound.default_trunk)")
    timeout = doc.get("timeout", default_timeout_s)
    lo, hi = TIMEOUT_RANGE_S
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or not lo <= timeout <= hi:
        raise RequestError("timeout", f"expected seconds {lo}-{hi}, got {_show(timeout)}")
    switch = None
    if "switch" in doc:
        if not switches:
            raise RequestError("switch", "this fork server has one switch; leave switch out")
        switch = _name(doc, "switch", switches, "switches")
    metadata = _metadata(doc["metadata"]) if "metadata" in doc else {}
    return CallRequest(to=to, from_=from_, route=route, trunk=trunk, timeout_s=int(math.ceil(timeout)),
                       metadata=metadata, switch=switch)
