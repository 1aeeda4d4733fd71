"""File playback: each segment a raw file in the spool, queued on the channel over ESL.

REF "Playback timing": a file plays only up to the EOF seen when it opens, so it is written
whole before it is queued; ``sendmsg`` execute ``playback`` with event-lock plays queued files
back to back, sample-exact (the default); ``uuid_broadcast`` puts a 100 ms hole before every
file. Files are named from the validated uuid and our own counter only (:mod:`..spool`).
"""

from __future__ import annotations

from typing import Any

from ..actions import PlayFile, WriteSegment
from ..segments import Segment
from ..spool import SpoolLayout
from .core import Item, Playback

__all__ = ["FileTransport"]


class FileTransport:
    name = "file"
    spooled = True

    def __init__(self, spool: SpoolLayout, command: str) -> None:
        self.spool = spool
        self.command = command
        self._seq = 0

    def send(self, playback: Playback, seg: Segment, end_pos: int) -> list[Any]:
        local, remote = self.spool.segment_paths(playback.uuid, self._seq, playback.write_rate)
        self._seq += 1
        playback.enqueue(Item(path=remote, local_path=local, ms=seg.ms, size=len(seg.pcm), end_pos=end_pos))
        return [WriteSegment(local, seg.pcm), PlayFile(playback.uuid, remote, self.command)]
