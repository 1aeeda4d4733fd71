"""The ``originate`` command of an outbound call, every token checked (sans-I/O).

``bgapi originate {vars}sofia/gateway/<trunk>/<to> <route> XML voicefork_outbound``: the switch
runs it on a thread of its own (no command connection waits for the ring time) and reports
the outcome as a BACKGROUND_JOB event whose body is ``+OK <uuid>`` or ``-ERR <CAUSE>``. Seen
on a real 1.10.12: the ``Job-UUID`` header of the bgapi command names the job; the event is
fired to every connection subscribed to BACKGROUND_JOB (ours is the event connection, not the
command connection that sent it, which gets none); the body ends with a newline
(``-ERR INVALID_GATEWAY`` for a gateway the switch does not have, ``-ERR
NORMAL_TEMPORARY_FAILURE`` for a host that does not answer).

The channel variables in ``{...}`` are constants and values that passed a pattern: the uuid
we chose (``origination_uuid``, so the fork that arrives is matched to the request), the
E.164 caller ID, the ring timeout in whole seconds, the route name (``voicefork_route``: the
fork server's ESL filter passes the leg's events from the start), the jitter buffer (set on
the leg before its media comes up at answer, as the inbound extension does before
``answer``) and ``ignore_early_media`` (a callee's 183 does not end the originate: only an
answer does). No request value can hold ``,`` ``}`` ``$`` or a space, so none can end a
variable, start an expansion or shift an argument.
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import LocalUsageError
from ..spool import valid_uuid
from .request import E164

__all__ = ["originate_args", "OUTBOUND_CONTEXT", "JITTER_BUFFER_MS"]

OUTBOUND_CONTEXT: Final = "voicefork_outbound"  # fs_dialplan.render.OUTBOUND_CONTEXT
JITTER_BUFFER_MS: Final = 20  # fs_dialplan.render.JITTER_BUFFER_MS: the inbound legs' jitter buffer
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise LocalUsageError(f"originate: {what} {value!r} is not safe in a dial string")
    return value


def originate_args(*, uuid: str, to: str, from_: str, trunk: str, route: str, timeout_s: int) -> str:
    """The arguments of ``originate`` (after the word itself)."""
    if not valid_uuid(uuid):
        raise LocalUsageError(f"originate: invalid uuid {uuid!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or not 1 <= timeout_s <= 600:
        raise LocalUsageError(f"originate: timeout {timeout_s!r} is not 1-600 whole seconds")
    to, from_ = _check(to, E164, "to"), _check(from_, E164, "from")
    trunk, route = _check(trunk, _NAME, "trunk"), _check(route, _NAME, "route")
    variables = ",".join([
        f"origination_uuid={uuid}",
        f"origination_caller_id_number={from_}",
        f"origination_caller_id_name={from_}",
        f"originate_timeout={timeout_s}",
        f"voicefork_route={route}",
        f"jitterbuffer_msec={JITTER_BUFFER_MS}",
        "ignore_early_media=true",
    ])
    return f"{{{variables}}}sofia/gateway/{trunk}/{to} {route} XML {OUTBOUND_CONTEXT}"
