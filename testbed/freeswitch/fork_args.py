"""``uuid_audio_fork`` argument parsing, as mod_audio_fork does it (REF "How arguments are parsed").

REF: the command line is split on spaces into at most 7 tokens and only the last token keeps
the rest of the line; single quotes group words and are stripped; a backslash is consumed as
an escape; a lone optional argument is metadata only if it starts with ``{`` or ``[``,
otherwise it is a bugname. So ``{"a": 1}`` with no bugname becomes bugname ``{"a":`` and
metadata ``1}``, which is what this module returns too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ForkCommand", "separate_blank", "parse_fork_command", "parse_rate", "DEFAULT_BUGNAME"]

DEFAULT_BUGNAME = "audio_fork"
MAX_TOKENS = 7


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


@dataclass(frozen=True, slots=True)
class ForkCommand:
    uuid: str
    verb: str  # start | stop | send_text | pause | resume | graceful-shutdown
    url: str | None = None
    mix: str | None = None  # mono | mixed | stereo
    rate: int | None = None
    bugname: str = DEFAULT_BUGNAME
    metadata: str | None = None  # start: metadata; stop/send_text: the text


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
