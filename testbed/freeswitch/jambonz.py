"""The jambonz mod_audio_fork's bidirectional "stream" path, as a pure core (no I/O, no clock).

Measured 2026-12-06 on FreeSWITCH 1.10.12 with the jambonz module (30f2189): /tmp/jambonz_report.md
(JREP below), with the module's source ``lws_glue.cpp`` (``:NNN`` below). Where neither says, the
docstring says "assumption".

One :class:`StreamPlayout` per fork ("bug") whose server may send binary frames. The emulated
switch feeds it the server's binary messages (:meth:`StreamPlayout.receive_binary`), the text
messages it understands (:meth:`mark`, :meth:`clear_marks`, :meth:`kill`) and the API
``stop_play`` (:meth:`stop_play`); on every frame the channel writes it calls :meth:`dub`, which
returns the frame the caller hears and the mark replies to send back on the socket::

    binary message ─▶ 1024-byte pieces ─▶ pre-buffer ─(threshold)─▶ [resampler] ─▶ playout buffer
                                                                                     │ 1 frame per write
    frame written by the channel (file, silence when idle) ─────────────────────▶ dub ─▶ the caller

JREP Q2, Q3, Q4, exactly as modelled here:

* Messages are s16le mono at the stream rate, any length; an odd byte is set aside for the next
  message (:55-70). libwebsockets hands the module each message in pieces of at most 1024 bytes
  (the protocol's rx buffer, audio_pipe.cpp:421) and each piece is processed on its own. Assumption:
  always exactly 1024-byte pieces from the start of each message (the real split can also fall on
  TCP boundaries); JREP's 1 s and 2 s bursts losing exactly their last 40 ms and 16 ms match this.
* Pre-buffer: a piece's samples are appended; nothing is released until it holds at least the
  threshold: ``1280 × factor`` samples for a fork's first release, then ``640 × factor`` for ever
  (:108-116, :487), where ``factor`` is ``stream_rate // channel_rate`` when the stream rate is
  higher, else 1. At 8 kHz: 160 ms, then 80 ms (measured). A release takes all the pre-buffer but
  a remainder below a multiple of ``factor``. What stays below the threshold waits for the next
  binary message, with no timer (the stuck tail). ``killAudio`` does not clear it.
* Marks: ``mark`` puts a name in the inventory (at most 30 in inventory + in use, later ones
  dropped silently, :43-50, :306-308). The next binary piece moves the inventory to "in use" and
  prepends one marker sample (0xFFFF, i.e. -1) per name (:79-101).
* Playout buffer: unbounded (boost circular buffer grown on demand, :171-177; 600 s accepted).
  Each written frame: up to one frame of samples is taken and ADDED to the frame with int16
  wrap-around (:1030-1034, vector_math.cpp; ``vector_normalize`` on int16 is a no-op). While a mark
  is in use or a cleared name is left, every -1 sample taken is a marker: it is dropped and pops
  the oldest cleared name (silently) or else the oldest in-use name (reply ``playout``); the
  frame then holds one sample less at its end (:989-1034). So a -1 in the audio fires a pending
  mark early. With the buffer empty and no mark in use, one inventory name fires per frame
  (:1035-1043). Underrun: the frame goes out unchanged, no event.
* ``killAudio`` flags the buffer; the next written frame is not dubbed: the playout buffer is
  emptied, every in-use then inventory name is replied ``cleared``, and the in-use names go to the
  cleared list although their markers went with the buffer (:936-963), so the next markers pop
  those stale names first (JREP Q4 "Out of step after killAudio"; the drain of N × 0xFFFF samples
  works because it just feeds the cleared list). What a message arriving between ``killAudio`` and
  that frame releases into the buffer is emptied with it: lost (JREP Q3 ``kill_then_new``); its
  part below the threshold stays in the pre-buffer and plays later, like any stuck tail.
* ``clearMarks`` moves in-use and inventory names to the cleared list, no reply (:321-332).
* ``stop_play`` empties the playout buffer only: not the pre-buffer, not the marks (:1054-1072).
* Reply text, exactly (:570-582, names not escaped): ``{"type": "mark", "data": {"name":"N",
  "event": "playout"}}`` (or ``"cleared"``).

Not modelled: the ``trylock`` misses (:136-203, :1054; with them a release or a frame can be
skipped: at 16 kHz that corrupted 29/1000 blocks over 20 s, at 8 kHz 0-17 samples per 20 s), and
the data races of Q7.3. Resampling (stream rate ≠ channel rate): the real module uses speex at
quality 2 (JREP: 26-27 dB at 16 kHz into PCMU, 25.5 dB at 24 kHz, glitches, marks broken).
Assumption: the emulator uses one soxr "QQ" stream per fork (also low quality, not the same
numbers); markers go through it as samples, so they are smeared away as in the real one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import soxr

__all__ = ["MARKER", "MAX_MARKS", "PIECE_BYTES", "Dub", "StreamPlayout", "mark_reply"]

MAX_MARKS = 30  # :43-50
PIECE_BYTES = 1024  # audio_pipe.cpp:421, the protocol's rx buffer
MARKER = b"\xff\xff"  # AUDIO_MARKER 0xFFFF, -1 as int16
_FIRST_THRESHOLD = 320 * 4  # × factor samples (:487): 160 ms at 8 kHz
_LATER_THRESHOLD = 320 * 2  # × factor samples (:108-116): 80 ms at 8 kHz


def mark_reply(name: str, cleared: bool = False) -> str:
    """The module's reply, byte for byte (:570-582); the name is not JSON-escaped (JREP Q4)."""
    event = "cleared" if cleared else "playout"
    return '{"type": "mark", "data": {"name":"' + name + '", "event": "' + event + '"}}'


@dataclass(frozen=True, slots=True)
class Dub:
    """What one written frame became."""

    frame: bytes  # the frame the caller hears
    added: int  # samples of streamed audio added to it (markers excluded)
    replies: tuple[str, ...] = field(default=())  # mark replies to send on the socket, in order


class StreamPlayout:
    """One fork's stream state: set-aside byte, pre-buffer, resampler, playout buffer, marks."""

    def __init__(self, channel_rate: int, stream_rate: int) -> None:
        if channel_rate <= 0:
            raise ValueError(f"channel_rate must be positive, got {channel_rate}")
        self.channel_rate = channel_rate
        self.stream_rate = stream_rate
        self.factor = stream_rate // channel_rate if stream_rate > channel_rate else 1  # downscale_factor
        self.threshold = _FIRST_THRESHOLD * self.factor  # streamingPreBufSize, in samples
        self._aside: bytes = b""
        self._pre = bytearray()  # s16le at the stream rate, markers included
        self._out = bytearray()  # s16le at the channel rate, markers included
        # Source: a resampler exists when the stream rate is set and differs (:521-528).
        self._resampler = (
            soxr.ResampleStream(stream_rate, channel_rate, 1, dtype="int16", quality="QQ")
            if stream_rate and stream_rate != channel_rate
            else None
        )
        # The three mark lists exist only after the first mark (:309-313).
        self._inventory: deque[str] | None = None
        self._in_use: deque[str] = deque()
        self._cleared: deque[str] = deque()
        self._clear_pending = False
        self.releases = 0
        self.marks_dropped = 0

    # ------------------------------------------------------------ what tests can read

    @property
    def prebuffered(self) -> int:
        """Samples (markers included) waiting in the pre-buffer, at the stream rate."""
        return len(self._pre) // 2

    @property
    def buffered(self) -> int:
        """Samples (markers included) waiting in the playout buffer, at the channel rate."""
        return len(self._out) // 2

    @property
    def pending_marks(self) -> tuple[str, ...]:
        """In-use names, then inventory names."""
        return (*self._in_use, *(self._inventory or ()))

    @property
    def stale_marks(self) -> tuple[str, ...]:
        """The cleared list: names the next markers will pop silently."""
        return tuple(self._cleared)

    @property
    def kill_pending(self) -> bool:
        return self._clear_pending

    # ------------------------------------------------------------ from the socket

    def receive_binary(self, message: bytes) -> None:
        """One binary WebSocket message (empty ones never get here: audio_pipe.cpp:153-161)."""
        for i in range(0, len(message), PIECE_BYTES):
            self._piece(message[i : i + PIECE_BYTES])

    def _piece(self, piece: bytes) -> None:
        data = self._aside + piece
        self._aside = b""
        if len(data) % 2:
            self._aside, data = data[-1:], data[:-1]
        markers = 0
        if self._inventory is not None:
            markers = len(self._inventory)
            self._in_use.extend(self._inventory)
            self._inventory.clear()
        self._pre += MARKER * markers
        self._pre += data
        if len(self._pre) // 2 < self.threshold:
            return
        self.threshold = _LATER_THRESHOLD * self.factor
        complete = (len(self._pre) // 2) // self.factor * self.factor
        chunk, leftover = bytes(self._pre[: complete * 2]), self._pre[complete * 2 :]
        if self._resampler is not None:
            out = self._resampler.resample_chunk(np.frombuffer(chunk, "<i2").astype(np.int16))
            chunk = out.astype("<i2").tobytes()
        self._out += chunk  # assumption: the trylock always succeeds
        self._pre = bytearray(leftover)
        self.releases += 1

    def mark(self, name: str) -> bool:
        """A ``mark`` message with a string name; False when dropped (30 pending)."""
        if self._inventory is not None and len(self._in_use) + len(self._inventory) >= MAX_MARKS:
            self.marks_dropped += 1
            return False
        if self._inventory is None:
            self._inventory = deque()
        self._inventory.append(name)
        return True

    def clear_marks(self) -> None:
        if self._inventory is None:
            return
        self._cleared.extend(self._in_use)
        self._cleared.extend(self._inventory)
        self._in_use.clear()
        self._inventory.clear()

    def kill(self) -> None:
        """``killAudio``: the next written frame empties the playout buffer (not the pre-buffer)."""
        self._clear_pending = True

    def stop_play(self) -> None:
        """API ``stop_play``: the playout buffer only (assumption: the trylock succeeds)."""
        self._out.clear()

    # ------------------------------------------------------------ from the channel's write path

    def dub(self, frame: bytes) -> Dub:
        """The write-replace callback for one written frame (s16le at the channel rate)."""
        if self._clear_pending:
            self._clear_pending = False
            self._out.clear()
            replies: list[str] = []
            if self._inventory is not None and (self._inventory or self._in_use):
                replies = [mark_reply(n, cleared=True) for n in (*self._in_use, *self._inventory)]
                self._cleared.extend(self._in_use)
                self._in_use.clear()
                self._inventory.clear()
            return Dub(frame, 0, tuple(replies))
        n = min(len(self._out), len(frame)) // 2
        taken = np.frombuffer(bytes(self._out[: n * 2]), "<i2")
        del self._out[: n * 2]
        replies = []
        if self._inventory is not None and (self._in_use or self._cleared):
            markers = np.flatnonzero(taken == -1)
            for _ in markers:
                source = self._cleared if self._cleared else self._in_use
                if source:
                    name = source.popleft()
                    if source is self._in_use:
                        replies.append(mark_reply(name))
            taken = np.delete(taken, markers)
        elif n == 0 and self._inventory:
            replies.append(mark_reply(self._inventory.popleft()))
        if taken.size == 0:
            return Dub(frame, 0, tuple(replies))
        mixed = np.frombuffer(frame, "<i2").copy()
        mixed[: taken.size] += taken  # int16 wrap-around, as vector_add
        return Dub(mixed.astype("<i2").tobytes(), int(taken.size), tuple(replies))
