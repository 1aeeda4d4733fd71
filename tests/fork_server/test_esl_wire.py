"""fork_server.esl_wire on bytes alone: the reader (whole, byte by byte, trailing data, limits)
and, as properties, that what it and python_esl_verdict let through is what python-ESL 1.4.18
frames the same way and survives.

The oracle is a port of python-ESL's own C (esl.c esl_recv_event, esl_buffer_read_packet,
esl_url_decode; esl_event.c esl_event_base_add_header, esl_event_add_array), written here
from the C and kept apart from the code under test: it reproduces the quirks (the name of a
line without ':' runs into the next line, values are %-decoded in place, ``\\r`` after a
newline is skipped, ``X[i]`` names, nested ``ARRAY::``), and measures what python-ESL would
do: the Content-Length it would malloc, the frames it would cut, the work of its decoding and
array code.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from fork_server.errors import EslProtocolError
from fork_server.esl_wire import (
    DROP,
    FORWARD,
    MAX_ARRAY_WORK,
    MAX_BODY,
    MAX_DECODE_WORK,
    MAX_EVENT_LINES,
    MAX_HEAD,
    SKIP,
    EslFrame,
    EslReader,
    python_esl_verdict,
)
from testbed.freeswitch.esl_server import serialize_event

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


# ------------------------------------------------------------------ the oracle: python-ESL's C, ported

def _atol(raw: bytes) -> int:
    m = re.match(rb"[ \t\n\v\f\r]*([+-]?[0-9]*)", raw)
    digits = m.group(1) if m else b""
    try:
        return max(min(int(digits), 2**63 - 1), -(2**63))
    except ValueError:
        return 0  # no digits: atol gives 0


def _decode(raw: bytes) -> tuple[bytes, int, bool]:
    """esl_url_decode on one C string: (result up to its NUL, strlen work, an escape whose
    reading by sscanf("%2x") is not plain hex -- blanks, signs, 0x: the port does not guess)."""
    out, work, odd, i = bytearray(), 0, False, 0
    while i < len(raw) and raw[i] != 0:
        if raw[i] == 0x25:
            rest = len(raw) - i
            work += rest
            pair = raw[i + 1 : i + 3]
            if rest > 2 and re.fullmatch(rb"[0-9A-Fa-f]{2}", pair):
                out.append(int(pair, 16))
                i += 3
                continue
            if rest > 2 and (pair[:1] in b" \t\n\v\f\r+-" or pair.lower() == b"0x"):
                odd = True  # sscanf skips blanks, takes a sign or 0x: not ported
            elif rest > 2 and re.match(rb"[0-9A-Fa-f]", pair):  # one hex digit then not: read, both skipped
                out.append(int(pair[:1], 16))
                i += 3
                continue
        out.append(raw[i])
        i += 1
    return bytes(out).split(b"\0", 1)[0], work, odd


def python_esl_frames(stream: bytes) -> tuple[list[tuple[bytes, bytes | None]], str]:
    """Frames python-ESL cuts from a whole buffer, and how it ends: "incomplete" (waiting for
    more), "crash" (a malloc of a negative or over-limit length: the SIGSEGV), "hang" (a NUL
    before any block end: it waits for ever) or "odd" (a %-escape the port does not read)."""
    frames: list[tuple[bytes, bytes | None]] = []
    buf = stream
    while buf:
        end, i = None, 0
        while i < len(buf) and buf[i] != 0:  # esl_buffer_read_packet
            if buf[i] == 0x0A:
                pe = i + 1
                if pe < len(buf) and buf[pe] == 0x0D:
                    pe += 1
                if pe < len(buf) and buf[pe] == 0x0A:
                    end = pe + 1
                    break
            i += 1
        if end is None:
            return frames, ("hang" if 0 in buf else "incomplete")
        end = min(end, 65535)
        packet, buf = buf[:end], buf[end:]
        length, p = None, 0
        while True:  # the header loop of esl_recv_event
            colon = packet.find(b":", p)
            if colon < 0:
                break
            name = packet[p:colon]
            v = colon + 1
            while v < len(packet) and packet[v] in b" \t":
                v += 1
            nl = packet.find(b"\n", v)
            if nl < 0:
                break
            if name.split(b"[", 1)[0].lower() == b"content-length" and length is None:
                value, _, odd = _decode(packet[v:nl])
                if odd:
                    return frames, "odd"
                length = _atol(value)
            p = nl + 1
            while p < len(packet) and packet[p] in b"\n\r":
                p += 1
        if length is None:
            frames.append((packet, None))
            continue
        if length < 0 or length > 1 << 32:
            return frames, "crash"
        if len(buf) < length:
            return frames, "incomplete"
        frames.append((packet, buf[:length]))
        buf = buf[length:]
    return frames, "incomplete"


def python_esl_event(body: bytes) -> dict[str, int]:
    """What python-ESL's text/event-plain loop and its add_header/add_array code do with a
    body: header lines it parses, the strlen work of its decoding, the deepest add_array
    recursion, the bytes that recursion copies, sum over names of (array items)^2, names with
    '[' (an index), and %-escapes the port does not read."""
    s = bytearray(body.split(b"\0", 1)[0]) + b"\0"  # strdup
    cost = dict(lines=0, decode=0, depth=0, array_work=0, indexed=0, odd=0)
    items: dict[bytes, int] = {}  # header names added so far: 0 a plain value, k an array of k items

    def cstr(at: int) -> bytes:
        return bytes(s[at : s.index(0, at)])

    def cfind(at: int, ch: bytes) -> int:
        i = s.find(ch, at, s.index(0, at))
        return i

    def add_array(name: bytes, val: bytes, depth: int) -> None:  # esl_event_add_array: from val + 7
        if len(val) < 8:
            return
        cost["depth"] = max(cost["depth"], depth)
        for item in val[7:].split(b"|:"):
            add(name, item, depth, push=True)

    def add(name: bytes, val: bytes, depth: int, push: bool) -> None:  # esl_event_base_add_header
        if b"[" in name:
            cost["indexed"] += 1
            return
        low = name.lower()
        if push and low in items:  # pushed onto the first header of that name, never re-split
            items[low] = max(items[low], 1) + 1
            return
        if not val:
            return
        if b"ARRAY::" in val:  # a header not there yet: the value is split again, from its start + 7
            return add_array(name, val, depth + 1)
        items.setdefault(low, 1 if push else 0)

    beg = 0
    while cost["lines"] <= MAX_EVENT_LINES + 1:
        c = cfind(beg, b"\n")
        if c < 0:
            break
        cost["lines"] += 1
        col = cfind(beg, b":")
        hval = None
        if col >= 0:
            s[col] = 0
            hval = col + 1
            while s[hval] == 0x20:
                hval += 1
        s[c] = 0
        name = cstr(beg)
        if hval is not None:
            raw = cstr(hval)
            value, work, odd = _decode(raw)
            cost["decode"] += work
            cost["odd"] += odd
            s[hval : hval + len(value) + 1] = value + b"\0"  # decoded in place: shorter, NUL-ended
            if value.startswith(b"ARRAY::"):
                add_array(name, value, 1)
            else:
                add(name, value, 0, push=False)
        beg = c + 1
        if s[beg] == 0x0A:
            break
    cost["array_work"] = sum(k * k for k in items.values())
    return cost


# ------------------------------------------------------------------ the reader on bytes


def _wire() -> bytes:
    ev = serialize_event({"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::play_audio", "Unique-ID": U,
                          "Playback-File-Path": "/tmp/a b%.r8"}, '{"file":"/tmp/x.r8"}')
    return (b"Content-Type: auth/request\n\n"
            + b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
            + b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n" + ev)


def test_reader_whole_bytewise_and_trailing_data():
    whole = EslReader().feed(_wire())
    r, bytewise = EslReader(), []
    for i in range(len(_wire())):
        bytewise += r.feed(_wire()[i : i + 1])
    assert whole == bytewise and len(whole) == 4
    assert whole[1].headers["Reply-Text"] == "+OK accepted" and whole[2].body == b"+OK\n"
    assert b"".join(f.head + (f.body or b"") for f in whole) == _wire()  # the frames are the stream, cut
    r = EslReader()
    assert len(r.feed(_wire() + b"Content-Type: command/rep")) == 4  # the partial block waits
    assert r.feed(b"ly\nReply-Text: +OK\n\n") == [
        EslFrame({"Content-Type": "command/reply", "Reply-Text": "+OK"}, None, b"Content-Type: command/reply\nReply-Text: +OK\n\n")
    ]


def test_reader_reads_names_as_python_esl_does():
    (f,) = EslReader().feed(b"content-TYPE:\tapi/response\nCONTENT-LENGTH:2\nReply-Text:  +OK x\n\nab")
    assert f.headers == {"Content-Type": "api/response", "Content-Length": "2", "Reply-Text": "+OK x"} and f.body == b"ab"


@pytest.mark.parametrize("wire", [
    b"Content-Length: -5\n\n", b"Content-Length: 99999999999\n\n", b"Content-Length:-5\n\n", b"Content-Length:\t-5\n\n",
    b"Content-Length: %2D5\n\n", b"content-length: -5\n\n", b"Content-Length[0]: -5\n\n", b"X: y\n\rContent-Length: -5\n\n",
    b"Content-Length: 5 \n\n", b"Content-Length: +5\n\n", b"Content-Length: 0x10\n\n", b"Content-Length: \n\n",
    b"Content-Length: 5\nContent-Length: 5\n\n", b"Content-Type: a\ncontent-type: b\n\n", b"\n\n", b"\nX: y\n\n",
    b"junk\nContent-Length: 5\n\n", b"X: a\0b\n\n", b"x" * MAX_HEAD, b"X: " + b"y" * MAX_HEAD + b"\n\n",
    b"Content-Length: %d\n\n" % (MAX_BODY + 1),
], ids=lambda w: repr(w[:30]))
def test_reader_refuses_what_python_esl_would_frame_otherwise_or_fatally(wire):
    with pytest.raises(EslProtocolError) as exc:
        EslReader().feed(wire)
    assert str(exc.value).startswith("esl: ") and "\n" not in str(exc.value)


def test_reader_limits_are_python_esls():
    block = b"X: " + b"y" * (MAX_HEAD - 5) + b"\n\n"  # exactly 65 535 bytes, blank line included
    assert len(block) == MAX_HEAD and EslReader().feed(block)[0].head == block
    with pytest.raises(EslProtocolError):
        EslReader().feed(b"X: y" + block[3:])  # one byte more: python-ESL would cut it
    assert EslReader().feed(b"Content-Length: %d\n\n" % MAX_BODY + b"z" * MAX_BODY)[0].body == b"z" * MAX_BODY


# ------------------------------------------------------------------ agreement with python-ESL, as properties

# Switch-like lines most of the time, and every variant python-ESL reads its own way.
NAMES = [b"Content-Type"] * 3 + [b"Reply-Text"] * 3 + [b"Job-UUID", b"X", b"Content-Length", b"content-length",
         b"CONTENT-LENGTH", b"Content-Length[0]", b"Content-Length ", b" Content-Length", b"", b"Content-Length\r"]
SEPS = [b": "] * 6 + [b":", b":\t", b": \t", b" : ", b"", b"::"]
VALUES = [b"command/reply", b"api/response", b"text/event-plain", b"+OK accepted", b"-ERR no"] * 2 + [
    b"0", b"3", b"12", b"-5", b"+5", b" 5", b"5 ", b"%2D5", b"%35", b"99999999999", b"0x10", b"", b"abc",
    b"ARRAY::a|:b", b"%", b"%4", b"% 4"]
ENDS = [b"\n"] * 8 + [b"\r\n", b"\n\r", b"\0\n"]

line = st.builds(lambda n, s, v, e: n + s + v + e, st.sampled_from(NAMES), st.sampled_from(SEPS), st.sampled_from(VALUES),
                 st.sampled_from(ENDS))


@st.composite
def frame(draw):
    lines = draw(st.lists(line, max_size=3))
    body = draw(st.binary(max_size=12) | st.sampled_from([b"", b"abc", b"\n\n", b"Content-Length: 3\n\n"]))
    if draw(st.booleans()):  # a true Content-Length, as the switch sends it
        lines.insert(draw(st.integers(0, len(lines))), b"Content-Length: %d\n" % len(body))
    return b"".join(lines) + draw(st.sampled_from([b"\n"] * 4 + [b"\r\n", b""])) + body


stream = st.lists(frame(), max_size=5).map(b"".join) | st.binary(max_size=200)


@given(stream)
def test_what_the_reader_accepts_python_esl_frames_the_same_way_and_survives(data):
    # The guard forwards the frames the reader gives, nothing else: fed exactly those bytes,
    # python-ESL cuts the same frames, takes every byte, and neither crashes nor hangs.
    try:
        frames = EslReader().feed(data)
    except EslProtocolError:
        return
    forwarded = b"".join(f.head + (f.body or b"") for f in frames)
    assert data.startswith(forwarded)
    theirs, ending = python_esl_frames(forwarded)
    assert ending == "incomplete"  # waiting for more: never "crash", "hang" or "odd"
    assert [(f.head, f.body) for f in frames] == theirs  # same cuts, same bodies, nothing left over
    for f in frames:
        assert len(f.head) <= MAX_HEAD and (f.body is None or len(f.body) <= MAX_BODY)


@given(stream, st.lists(st.integers(0, 300), max_size=6))
def test_the_reader_gives_the_same_frames_however_the_bytes_are_cut(data, cuts):
    try:
        whole = EslReader().feed(data)
    except EslProtocolError:
        return
    r, parts, at = EslReader(), [], 0
    for c in sorted(cuts) + [len(data)]:
        parts += r.feed(data[at:c])
        at = max(at, c)
    assert parts == whole


# ------------------------------------------------------------------ the verdict, against python-ESL's event code

HNAMES = [b"Event-Name", b"Unique-ID", b"variable_x", b"X", b"x", b"_body", b"Event-name"] * 3 + [b"H[4000]", b"A[1]", b""]
HVALS = [b"PLAYBACK_STOP", U.encode(), b"a%20b", b"%3A", b"%25", b"::", b" ", b"[", b"|:"] * 6 + [
    b"ARRAY::", b"ARRAY%3A%3A", b"%41RRAY::", b"AR%52AY%3A:", b"x|:y", b"%", b"%4", b"%4G", b"% 4", b"%+4", b"%%", b"%00",
    b"ARRAY", b"\r"]
hline = st.builds(lambda n, s, vs: n + s + b"".join(vs), st.sampled_from(HNAMES), st.sampled_from([b": "] * 12 + [b":", b""]),
                  st.lists(st.sampled_from(HVALS), max_size=4))
event_body = st.builds(lambda lead, lines, tail: lead + b"\n".join(lines) + tail, st.sampled_from([b""] * 6 + [b"\n"]),
                       st.lists(hline, max_size=8), st.sampled_from([b"\n\n", b"\n", b"", b"\nContent-Length: 2\n\n{}"]))


def _event_frame(body: bytes) -> EslFrame:
    head = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body)
    return EslFrame({"Content-Length": str(len(body)), "Content-Type": "text/event-plain"}, body, head)


def _within_python_esls_means(cost: dict[str, int]) -> bool:
    return (cost["indexed"] == 0 and cost["odd"] == 0 and cost["depth"] <= 1 and cost["lines"] <= MAX_EVENT_LINES
            and cost["decode"] <= MAX_DECODE_WORK and cost["array_work"] <= 4 * MAX_ARRAY_WORK)


@given(event_body)
def test_an_event_forwarded_to_python_esl_is_one_it_parses_in_bounded_work(body):
    verdict, why = python_esl_verdict(_event_frame(body), events=True)
    assert verdict in (FORWARD, SKIP)  # an event is never worth the link
    if verdict == FORWARD:
        assert _within_python_esls_means(python_esl_event(body)), body
    else:
        assert why and "\n" not in why and len(why) < 300


@given(event_body)
def test_on_a_command_connection_anything_but_a_reply_drops_the_link(body):
    assert python_esl_verdict(_event_frame(body), events=False)[0] == DROP  # python-ESL would queue it for ever


@pytest.mark.parametrize("body, fault", [
    (b"Event-Name: CUSTOM\nX: " + b"ARRAY::" * 300 + b"\n\n", "nested ARRAY"),
    (b"Event-Name: CUSTOM\nX: ARRAY%3A%3AARRAY%3A%3AARRAY%3A%3Ax\n\n", "nested ARRAY"),  # as a caller's SIP header reaches it
    (b"Event-Name: CUSTOM\nX: " + b"x" * 70 + b"ARRAY::\n\n", "nested ARRAY"),  # one, but 70 bytes in: 10 deep
    (b"Event-Name: CUSTOM\nX: ARRAY::" + b"a|:" * 5000 + b"\n\n", "ARRAY:: values of"),
    (b"Event-Name: CUSTOM\n" + b"X: ARRAY::a|:b\n" * 3000 + b"\n", "ARRAY:: values of"),  # one name's array grows per line
    (b"Event-Name: CUSTOM\nH[4000]: v\n\n", "'[' in header name"),
    (b"Event-Name: CUSTOM\nX: " + b"%25" * 40000 + b"\n\n", "%-decoding would cost"),
    (b"Event-Name: CUSTOM\nX: 50% off\n\n", "odd %-escape"),
    # A colon-less line: python-ESL takes the rest of the event as one value, so lines each
    # safe alone nest (each ARRAY:: is inside the previous one's only item).
    (b"Event-Name: CUSTOM\njunk\n" + b"X: ARRAY::a\n" * 5 + b"\n", "without ':'"),
    (b"\nA: ARRAY::x\nB: ARRAY::y\nC: ARRAY::z\n\n", "without ':'"),
    (b"A: b\n" * (MAX_EVENT_LINES + 1) + b"\n", "header lines"),
], ids=["nested", "nested-escaped", "nested-late", "items", "items-over-lines", "index", "decode-work", "bad-escape", "joined-line",
        "leading-newline", "lines"])
def test_events_python_esl_cannot_take_are_skipped_with_the_reason(body, fault):
    assert not _within_python_esls_means(python_esl_event(body))  # the oracle agrees it is one
    verdict, why = python_esl_verdict(_event_frame(body), events=True)
    assert verdict == SKIP and fault in why, why


def test_real_events_and_replies_go_through():
    ev = serialize_event({"Event-Name": "PLAYBACK_STOP", "Unique-ID": U, "Playback-File-Path": "/spool/x y.r8",
                          "variable_sip_h_X-Note": "50% [off] a|:b ARRAY", "Caller-Caller-ID-Name": "O'Brien \"x\"",
                          "variable_list": "ARRAY::a|:b|:c", "variable_odd": "Bob ARRAY::x"}, None)  # split once: fine
    (frame,) = EslReader().feed(ev)
    assert python_esl_verdict(frame, events=True) == (FORWARD, "")
    for wire in (b"Content-Type: command/reply\nReply-Text: +OK\n\n",
                 b"Content-Type: api/response\nContent-Length: 5\n\n-ERR\n",
                 b"Content-Type: text/disconnect-notice\nContent-Length: 3\n\nbye"):
        (frame,) = EslReader().feed(wire)
        assert python_esl_verdict(frame, events=False) == (FORWARD, "")
        assert python_esl_verdict(frame, events=True) == (FORWARD, "")


@pytest.mark.parametrize("wire, events, verdict", [
    (b"Content-Type: text/event-json\nContent-Length: 2\n\n[[", True, SKIP),  # cJSON: no depth limit
    (b"Content-Type: log/data\nContent-Length: 2\n\nhi", True, SKIP),
    (b"Content-Type: Command/Reply\n\n", True, DROP),  # python-ESL takes it as the reply: cannot be skipped
    (b"Reply-Text: +OK\n\n", False, DROP),  # no Content-Type: python-ESL takes it as the reply
    (b"Content-Type: command/reply\nReply-Text: ARRAY::" + b"ARRAY::" * 50 + b"\n\n", False, DROP),
    (b"Content-Type: text/event-plain\nContent-Length: 0\n\n", False, DROP),
    (b"Content-Type: auth/request\n\n", False, DROP),
], ids=["json", "log", "odd-case-reply", "no-type", "hazard-in-reply", "event-on-commands", "auth-again"])
def test_what_is_skipped_and_what_drops_the_link(wire, events, verdict):
    (frame,) = EslReader().feed(wire)
    assert python_esl_verdict(frame, events=events)[0] == verdict
