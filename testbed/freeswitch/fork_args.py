"""``uuid_audio_fork`` argument parsing, as mod_audio_fork does it (REF "How arguments are parsed").

REF: the command line is split on spaces into at most 7 tokens and only the last token keeps
the rest of the line; single quotes group words and are stripped; a backslash is consumed as
an escape; a lone optional argument is metadata only if it starts with ``{`` or ``[``,
otherwise it is a bugname. So ``{"a": 1}`` with no bugname becomes bugname ``{"a":`` and
metadata ``1}``, which is what this module returns too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ForkCommand", "separate_blank", "parse_fork_command", "parse_jambonz_fork_command", "parse_rate", "atoi",
    "DEFAULT_BUGNAME", "JAMBONZ_USAGE",
]

DEFAULT_BUGNAME = "audio_fork"
MAX_TOKENS = 7
JAMBONZ_MAX_TOKENS = 10  # jambonz 30f2189 mod_audio_fork.c:185, argv[10]
JAMBONZ_USAGE = (
    "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown | stop_play ] [wss-url | path]"
    " [mono | mixed | stereo] [8000 | 16000 | 24000 | 32000 | 64000] [bugname] [metadata]"
    " [bidirectionalAudio_enabled] [bidirectionalAudio_stream_enabled] [bidirectionalAudio_stream_samplerate]\n"
)


def _clean(token: str) -> str:
    """Strip unescaped single quotes and consume backslashes (REF)."""
    out = []
    esc = False
    for ch in token:
        if esc:
            out.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch != "'":
            out.append(ch)
    return "".join(out)


def separate_blank(line: str, max_tokens: int = MAX_TOKENS) -> list[str]:
    """Split on runs of spaces, honouring single quotes; the last token keeps the rest (REF)."""
    tokens: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        if len(tokens) == max_tokens - 1:
            tokens.append(_clean(line[i:]))
            break
        start, quoted, esc = i, False, False
        while i < n:
            ch = line[i]
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == "'":
                quoted = not quoted
            elif ch == " " and not quoted:
                break
            i += 1
        tokens.append(_clean(line[start:i]))
    return tokens


def parse_rate(token: str) -> int:
    """``8k``/``16k`` or a number; REF: a rate that is not a multiple of 8000 is only logged."""
    if token == "8k":
        return 8000
    if token == "16k":
        return 16000
    digits = ""
    for ch in token:  # atoi: leading digits
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def atoi(token: str) -> int:
    """C ``atoi``: optional blanks and sign, then leading digits; 0 when there are none."""
    t = token.lstrip(" \t\n\r\f\v")
    sign = 1
    if t[:1] in ("-", "+"):
        sign, t = (-1 if t[0] == "-" else 1), t[1:]
    digits = ""
    for ch in t:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


@dataclass(frozen=True, slots=True)
class ForkCommand:
    uuid: str
    verb: str  # start | stop | send_text | pause | resume | graceful-shutdown (| stop_play: jambonz)
    url: str | None = None
    mix: str | None = None  # mono | mixed | stereo
    rate: int | None = None
    bugname: str = DEFAULT_BUGNAME
    metadata: str | None = None  # start: metadata; stop/send_text: the text
    # jambonz only (the drachtio parser leaves these as they are): bidirectionalAudio_enabled,
    # bidirectionalAudio_stream_enabled, bidirectionalAudio_stream_samplerate.
    bidi_enabled: bool = False
    bidi_stream: bool = False
    bidi_rate: int = 0

    @property
    def bidi_pipe(self) -> bool:
        """jambonz: binary frames from the server reach the module (``enabled + stream`` != 0,
        lws_glue.cpp:452, audio_pipe.cpp:153-161); otherwise they are discarded."""
        return self.bidi_enabled or self.bidi_stream

    @property
    def bidi_plays(self) -> bool:
        """jambonz: the write-replace bug that plays the frames is added (all three non-zero, :275-279)."""
        return self.bidi_enabled and self.bidi_stream and self.bidi_rate != 0

    @property
    def file_mode(self) -> bool:
        """jambonz: ``playAudio`` is handled as by drachtio (enabled and not stream, lws_glue.cpp:212-215)."""
        return self.bidi_enabled and not self.bidi_stream


def parse_fork_command(args: str) -> ForkCommand | str:
    """Parse the API argument line; returns the command or a ``-USAGE``/``-ERR`` text."""
    argv = separate_blank(args)
    if len(argv) < 2:
        return "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown ] [wss-url | path] [mono | mixed | stereo] [8k | 16k] [bugname] [metadata]\n"
    uuid, verb, rest = argv[0], argv[1], argv[2:]
    if verb == "start":
        if len(rest) < 3:
            return "-ERR invalid start arguments\n"
        url, mix, rate = rest[0], rest[1], parse_rate(rest[2])
        bugname, metadata = DEFAULT_BUGNAME, None
        extra = rest[3:]
        if len(extra) == 1:
            if extra[0][:1] in ("{", "["):
                metadata = extra[0]
            else:
                bugname = extra[0]
        elif len(extra) >= 2:
            bugname, metadata = extra[0], extra[1]
        return ForkCommand(uuid, verb, url, mix, rate, bugname, metadata)
    if verb in ("stop", "send_text"):
        # stop [bugname] [text]; send_text [bugname] <text>: a lone token starting {/[ is text.
        bugname, text = DEFAULT_BUGNAME, None
        if len(rest) == 1:
            if rest[0][:1] in ("{", "[") or verb == "send_text":
                text = rest[0]
            else:
                bugname = rest[0]
        elif len(rest) >= 2:
            bugname, text = rest[0], " ".join(rest[1:])
        return ForkCommand(uuid, verb, bugname=bugname, metadata=text)
    if verb in ("pause", "resume", "graceful-shutdown"):
        return ForkCommand(uuid, verb, bugname=rest[0] if rest else DEFAULT_BUGNAME)
    return f"-ERR unknown command {verb}\n"


def parse_jambonz_fork_command(args: str) -> ForkCommand | str:
    """The jambonz module's parse (30f2189 ``mod_audio_fork.c:182-283``), as measured on 1.10.12
    (/tmp/jambonz_report.md Q1, 2026-12-06).

    The line is split into at most 10 tokens (the last keeps the rest). ``start`` reads the three
    bidirectional arguments only when all 10 tokens are there: ``argv[5]``/``argv[6]`` are then the
    bugname and metadata, ``''`` meaning the default bugname or no metadata; the two flags are true
    only for exactly ``true``; the rate is ``atoi``. With 7-9 tokens it is drachtio's form (bugname,
    metadata) and the defaults are enabled=1, stream=0, rate 0: file mode. A lone 6th token is
    metadata if it starts with ``{``/``[``. ``stop``/``send_text`` take ``argv[3]`` (one token) as
    the text. Returns the command, or the text the API answers.
    """
    argv = separate_blank(args, JAMBONZ_MAX_TOKENS)
    if len(argv) < 2 or (argv[1] == "start" and len(argv) < 4):
        return JAMBONZ_USAGE
    uuid, verb = argv[0], argv[1].lower()  # strcasecmp for every verb
    argc = len(argv)
    if verb == "start":
        if argc < 5:
            # strcmp(argv[4], "16k") with argv[4] NULL (source, :301): not measured.
            return ForkCommand(uuid, "start", argv[2], argv[3], None)
        bugname, metadata = DEFAULT_BUGNAME, None
        enabled, stream, brate = True, False, 0
        if argc > 9:
            bugname = argv[5] or DEFAULT_BUGNAME
            metadata = argv[6] or None
            enabled, stream, brate = argv[7] == "true", argv[8] == "true", atoi(argv[9])
        elif argc > 6:
            bugname, metadata = argv[5], argv[6]
        elif argc > 5:
            if argv[5][:1] in ("{", "["):
                metadata = argv[5]
            else:
                bugname = argv[5]
        return ForkCommand(uuid, "start", argv[2], argv[3], parse_rate(argv[4]), bugname, metadata,
                           enabled, stream, brate)
    if verb in ("stop", "send_text"):
        bugname, text = DEFAULT_BUGNAME, None
        if argc > 3:
            bugname, text = argv[2], argv[3]
        elif argc > 2:
            if argv[2][:1] in ("{", "["):
                text = argv[2]
            else:
                bugname = argv[2]
        elif verb == "send_text":
            # Source: "send_text requires an argument", and nothing is written; mod_event_socket
            # then answers "-ERR no reply" (assumption: not measured).
            return "-ERR no reply\n"
        return ForkCommand(uuid, verb, bugname=bugname, metadata=text)
    if verb in ("pause", "resume", "graceful-shutdown"):
        return ForkCommand(uuid, verb, bugname=argv[2] if argc > 2 else DEFAULT_BUGNAME)
    if verb == "stop_play":
        return ForkCommand(uuid, verb)  # always the default bugname (:219-220)
    return "-ERR Operation Failed\n"  # source: "unsupported mod_audio_fork cmd", status false
