"""In-band playback: each segment a ``playAudio`` message over the fork socket.

REF "playAudio": mod_audio_fork writes the audio to a file in the switch's temp dir and fires
``mod_audio_fork::play_audio`` with its name, but does not play it; the file is then queued like
any other (``sendmsg`` playback). Only a file in that temp dir with the module's exact name
pattern is ever played (a peer's path never reaches ESL unchecked).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from .. import audio_fork, esl_messages as em
from ..dialects import messages as msg
from ..actions import PlayFile, SendToConnector, SendToFork
from ..segments import Segment
from .core import Item, Playback

__all__ = ["InbandTransport"]

_INBAND_FILE = re.compile(r"^[0-9a-fA-F-]{36}_[0-9]{1,12}\.tmp\.(r8|r16|r24|r32|r48|r64|wav)$")


class InbandTransport:
    name = "inband"
    spooled = False  # the switch writes the files (its temp dir), not us

    def __init__(self, switch_temp_dir: str, command: str) -> None:
        self.temp_dir = switch_temp_dir.rstrip("/")
        self.command = command

    def send(self, playback: Playback, seg: Segment, end_pos: int) -> list[Any]:
        playback.await_file(Item(path=None, local_path=None, ms=seg.ms, size=0, end_pos=end_pos))
        return [SendToFork(audio_fork.play_audio(seg.pcm, playback.write_rate))]

    def file_arrived(self, playback: Playback, ev: em.ForkEvent) -> list[Any]:
        item = playback.awaiting_file.popleft()
        path = (ev.body or {}).get("file") if isinstance(ev.body, dict) else None
        ok = (
            isinstance(path, str)
            and posixpath.dirname(path) == self.temp_dir
            and _INBAND_FILE.match(posixpath.basename(path)) is not None
        )
        if not ok:
            playback.errors["inband_bad_file"] = playback.errors.get("inband_bad_file", 0) + 1
            playback.marks_cleared += len(item.marks)
            return [SendToConnector(msg.MarkDone(m, "cleared")) for m in item.marks]
        item.path = path
        playback.queue.append(item)
        return [PlayFile(playback.uuid, path, self.command)]

