"""mod_event_socket framing, sans-I/O, and what python-ESL 1.4.18 must never be handed.

:class:`EslReader` cuts the switch's byte stream into frames: a header block ended by a blank
line, then ``Content-Length`` bytes of body. It reads header lines the way python-ESL does
(``esl_recv_event`` in esl.c: the name runs to the first ``:``, the value follows without
leading blanks, names compare case-insensitively) and refuses, with :class:`EslProtocolError`,
every block python-ESL would frame differently or fatally. So on every stream it accepts,
python-ESL, the asyncio client and the guard agree where each frame ends. Limits: a header
block (blank line included) ≤ 65 535 bytes (python-ESL cuts longer ones in its 64 KiB - 1
buffer), a body ≤ 4 MiB.

What python-ESL 1.4.18 does with a frame (read in its esl.c, esl_event.c, esl_buffer.c, and
each crash reproduced against it):

* ``len = atol(Content-Length)``, ``body = malloc(len + 1)``, ``body[len] = 0``, no check: a
  negative or huge length is a write through NULL or before the buffer (SIGSEGV). The value is
  %-decoded first and the name matched case-insensitively, so ``content-length:-5``,
  ``Content-Length: %2D5`` and ``Content-Length[0]: -5`` crash it too; a length that is a lie
  blocks it until the bytes come.
* The header block ends at the first ``\\n\\n`` or ``\\n\\r\\n``; the scan stops at a NUL (the
  buffer then grows for ever); after a value's newline every ``\\r`` and ``\\n`` is skipped; a
  line with no ``:`` joins the next one into a name.
* Every value, outer and in a ``text/event-plain`` body, is %-decoded in place: each ``%``
  costs a ``strlen`` of the rest of the value (quadratic). A value holding ``ARRAY::`` becomes
  an array, split from 7 bytes in: while ``ARRAY::`` is still in the first item it recurses,
  copying the rest each time (so one ``ARRAY::`` at byte 7 or later nests offset // 7 + 1
  deep; the switch encodes a caller's ``:`` as ``%3A``, which python-ESL decodes back), and each push rebuilds the whole value (quadratic in the items of one header name). A name ``X[i]`` sets
  element i ≤ 4000 of an array, filling the gap (memory × 4000 per line, then a NULL write).
* ``text/event-json`` goes to cJSON, which recurses without a depth limit (stack overflow).
* On a command connection, a frame that is not a reply is queued for ever (``race_event``);
  one without a ``Content-Type`` is taken as the reply.

:func:`python_esl_verdict` applies those facts to one frame: forward it, skip it (an event
python-ESL cannot take; the stream stays in step), or drop the link (a reply that cannot be
forwarded: skipping it would leave python-ESL waiting for it for ever).
"""

from __future__ import annotations

import re
from itertools import repeat
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from .errors import EslProtocolError

__all__ = ["EslFrame", "EslReader", "python_esl_verdict", "FORWARD", "SKIP", "DROP", "MAX_HEAD", "MAX_BODY"]

MAX_HEAD = 65535  # python-ESL's socket_buf - 1: a longer block is cut and the rest read as another
MAX_BODY = 4 << 20
MAX_EVENT_LINES = 10_000  # python-ESL deletes Event-Name by a list walk per line: quadratic past this
MAX_DECODE_WORK = 1 << 30  # sum of '%' count x value length: ~0.1 s of python-ESL's strlen calls
MAX_ARRAY_WORK = 1 << 22  # sum over header names of (array items)^2: python-ESL rebuilds per push

FORWARD, SKIP, DROP = "forward", "skip", "drop"

_LENGTH = re.compile(rb"[0-9]{1,8}")
# A '%' python-ESL would decode differently from the standard (sscanf "%2x" also takes signs,
# blanks, one digit), or one that may spell A, R or Y of "ARRAY::": the line-by-line check then.
_SUSPECT_ESCAPE = re.compile(rb"%(?:(?![0-9A-Fa-f]{2})|41|52|59)")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_REPLIES = ("command/reply", "api/response")
_CL, _CT = b"content-length", b"content-type"


class EslFrame(NamedTuple):
    headers: dict[str, str]  # Content-Length and Content-Type under these spellings whatever the case
    body: bytes | None
    head: bytes  # the header block as received, its blank line included


class EslReader:
    """``feed(bytes)`` → complete frames; raises :class:`EslProtocolError` on a stream that
    python-ESL would frame differently or fatally (then nothing more can be read from it)."""

    __slots__ = ("_buf", "_frame", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frame: tuple[dict[str, str], bytes] | None = None
        self._need = 0

    def feed(self, data: bytes) -> list[EslFrame]:
        buf = self._buf
        buf += data
        out: list[EslFrame] = []
        while True:
            if self._frame is None:
                end = buf.find(b"\n\n")
                if end < 0 or end > MAX_HEAD - 2:
                    if len(buf) >= MAX_HEAD:
                        raise EslProtocolError(f"header block over {MAX_HEAD} bytes")
                    if b"\r" in buf or b"\0" in buf:  # python-ESL may already see a block end, or never will
                        _outer_headers(bytes(buf))
                    break
                head = bytes(buf[: end + 2])
                del buf[: end + 2]
                headers = _outer_headers(head[:-2])
                raw = headers.get("Content-Length")
                if raw is None:
                    out.append(EslFrame(headers, None, head))
                    continue
                if not _LENGTH.fullmatch(raw.encode()) or int(raw) > MAX_BODY:
                    raise EslProtocolError(f"Content-Length {raw[:24]!r} is not 0..{MAX_BODY}")
                self._frame, self._need = (headers, head), int(raw)
            if len(buf) < self._need:
                break
            body = bytes(buf[: self._need])
            del buf[: self._need]
            headers, head = self._frame
            out.append(EslFrame(headers, body, head))
            self._frame = None
        return out


def _outer_headers(block: bytes) -> dict[str, str]:
    if b"\r" in block or b"\0" in block:
        raise EslProtocolError("CR or NUL in a header block (python-ESL ends or skips the block there)")
    headers: dict[str, str] = {}
    for line in block.split(b"\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            raise EslProtocolError(f"header line without ':' {_show(line)} (python-ESL joins it to the next)")
        if b"[" in name:
            raise EslProtocolError(f"'[' in header name {_show(name)} (python-ESL takes it as an array index)")
        value = value.lstrip(b" \t")
        low = name.lower()
        if low == _CL or low == _CT:
            key = "Content-Length" if low == _CL else "Content-Type"
            if key in headers:
                raise EslProtocolError(f"two {key} headers")
            if b"%" in value:
                raise EslProtocolError(f"%-escape in {key} {_show(value)} (python-ESL decodes it)")
            headers[key] = value.decode("ascii", "replace")
        else:
            headers[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return headers


def python_esl_verdict(frame: EslFrame, *, events: bool) -> tuple[str, str]:
    """``(FORWARD, "")``, ``(SKIP, why)`` or ``(DROP, why)`` for a frame from the switch, on
    the event connection (``events``) or a command connection."""
    ctype = frame.headers.get("Content-Type")
    replyish = ctype is None or ctype.lower() in _REPLIES  # what python-ESL's send_recv takes as the reply
    why = _lines_fault(frame.head[:-2].split(b"\n"), b" \t") if _suspect(frame.head) else None
    if replyish:
        if ctype not in _REPLIES:
            why = f"reply with Content-Type {ctype!r}"
        return (DROP, why) if why else (FORWARD, "")
    if why is None:
        if ctype == "text/disconnect-notice":
            return FORWARD, ""
        if not events:
            why = f"{ctype!r} frame on a command connection (python-ESL would queue it for ever)"
        elif ctype != "text/event-plain":
            why = f"Content-Type {ctype!r} (we subscribe plain; python-ESL's JSON parser has no depth limit)"
        elif frame.body:
            why = _event_fault(frame.body)
    if why is None:
        return FORWARD, ""
    return (SKIP, why) if events else (DROP, why)


def _event_fault(body: bytes) -> str | None:
    """Why python-ESL cannot take this text/event-plain body, or None (cheap when it can)."""
    if body[:1] == b"\n":  # python-ESL takes the empty first line's name up to the next ':' anywhere
        return "a header line without ':' (python-ESL reads the rest of the event as its value)"
    end = body.find(b"\n\n")
    # python-ESL parses lines that end in "\n", up to the first blank line.
    section = body[:end] if end >= 0 else body[: max(body.rfind(b"\n"), 0)]
    if not section:
        return None
    lines = section.split(b"\n")
    if len(lines) > MAX_EVENT_LINES:
        return f"{len(lines)} header lines (over {MAX_EVENT_LINES})"
    if not all(map(bytes.__contains__, lines, repeat(b":"))):
        return "a header line without ':' (python-ESL reads the rest of the event as its value)"
    if _suspect(section):
        return _lines_fault(lines, b" ")
    return None


def _suspect(text: bytes) -> bool:
    if b"[" in text or b"ARRAY" in text:
        return True
    pct = text.count(b"%")
    return bool(pct) and (pct * len(text) > MAX_DECODE_WORK or _SUSPECT_ESCAPE.search(text) is not None)


def _lines_fault(lines: list[bytes], blanks: bytes) -> str | None:
    """The exact check, line by line, of what python-ESL's decode and array code would do."""
    decode_work = 0
    items: dict[bytes, int] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        if b"[" in name:
            return f"'[' in header name {_show(name)} (python-ESL takes it as an array index)"
        value = value.lstrip(blanks)
        pct = value.count(b"%")
        if pct:
            if _BAD_ESCAPE.search(value):
                return f"odd %-escape in {_show(name)} (python-ESL's sscanf would read it its own way)"
            decode_work += pct * len(value)
            value = unquote_to_bytes(value)
        at = value.find(b"ARRAY::")
        if at >= 7 or (at >= 0 and value.find(b"ARRAY::", at + 1) >= 0):
            # Split again from 7 bytes in while ARRAY:: is in the first item: depth = offset // 7 + 1.
            return f"nested ARRAY:: in {_show(name)} (python-ESL recurses, copying the rest each time)"
        if at >= 0:
            low = name.lower()
            items[low] = items.get(low, 1) + value.count(b"|:") + 1
    if decode_work > MAX_DECODE_WORK:
        return f"%-decoding would cost python-ESL {decode_work:.2g} byte scans (over {MAX_DECODE_WORK:.2g})"
    work = sum(k * k for k in items.values())
    if work > MAX_ARRAY_WORK:
        return f"ARRAY:: values of {max(items.values())} items (python-ESL rebuilds the value per item)"
    return None


def _show(raw: bytes) -> str:
    return repr(raw[:40].decode("utf-8", "replace"))  # for a log line: short, quoted, one line
