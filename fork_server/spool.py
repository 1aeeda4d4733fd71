"""Where a call's TTS segment files live, as the fork server and as FreeSWITCH see them.

Paths are built only from a validated FreeSWITCH uuid and our own counter, never from
anything else a peer sends (issue 6: no traversal out of the spool dir). The directory
layout is ``<spool>/<uuid>/<seq>.r8``; FreeSWITCH reads the same files under its own
mount point (``playback.freeswitch_spool_dir``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .errors import LocalUsageError

__all__ = ["UUID_RE", "valid_uuid", "SpoolLayout", "raw_extension"]

# FreeSWITCH channel uuids are RFC 4122 text (8-4-4-4-12 hex).
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# REF "playAudio": raw at 8000/16000/.../64000 maps to .r8 ... .r64.
_RAW_EXT = {8000: ".r8", 16000: ".r16", 24000: ".r24", 32000: ".r32", 48000: ".r48", 64000: ".r64"}


def valid_uuid(value: str) -> bool:
    return isinstance(value, str) and UUID_RE.fullmatch(value) is not None


def raw_extension(rate: int) -> str:
    """File extension FreeSWITCH's mod_sndfile reads as raw s16le at ``rate``."""
    try:
        return _RAW_EXT[rate]
    except KeyError:
        raise LocalUsageError(f"no raw file extension for {rate} Hz") from None


@dataclass(frozen=True, slots=True)
class SpoolLayout:
    """The spool root seen locally (``local_root``) and by FreeSWITCH (``switch_root``)."""

    local_root: str
    switch_root: str

    def __post_init__(self) -> None:
        for name in ("local_root", "switch_root"):
            value = getattr(self, name)
            if not isinstance(value, str) or not posixpath.isabs(value):
                raise LocalUsageError(f"{name} must be an absolute path, got {value!r}")

    def _check(self, uuid: str) -> None:
        if not valid_uuid(uuid):
            raise LocalUsageError(f"refusing spool path for invalid uuid {uuid!r}")

    def call_dir(self, uuid: str) -> str:
        self._check(uuid)
        return posixpath.join(self.local_root, uuid.lower())

    def segment_paths(self, uuid: str, seq: int, rate: int) -> tuple[str, str]:
        """(local path, FreeSWITCH path) of segment ``seq`` of call ``uuid``."""
        self._check(uuid)
        if not isinstance(seq, int) or seq < 0:
            raise LocalUsageError(f"segment sequence must be a non-negative int, got {seq!r}")
        name = f"{seq:06d}{raw_extension(rate)}"
        u = uuid.lower()
        return posixpath.join(self.local_root, u, name), posixpath.join(self.switch_root, u, name)
