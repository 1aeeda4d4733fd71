"""Audio on an emulated channel: sound files as FreeSWITCH reads them, the caller's mouth and ear.

REF "Segment format" and "Playback timing":
* raw ``.r8 .r16 .r24 .r32 .r48 .r64`` are s16le mono at that rate; ``.wav`` by its header;
* a file is read up to the EOF seen at open (growing files play short);
* a file at another rate than the channel's loses samples at its start to the resampler
  (``.r16`` into an 8 kHz call: about 17 samples, a 2.1 ms hole at every boundary);
* a file that is not a whole number of ptimes is padded with silence to the next one.
"""

from __future__ import annotations

import os
import stat
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

__all__ = ["SoundFileError", "read_sound_file", "file_rate", "Ear", "Mouth", "resample_clip"]

RAW_RATES = {f".r{k}": k * 1000 for k in (8, 16, 24, 32, 48, 64)}
MAX_FILE_BYTES = 64 << 20


class SoundFileError(OSError):
    pass


def file_rate(path: str) -> int | None:
    return RAW_RATES.get(os.path.splitext(path)[1].lower())


def resample_clip(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Whole-clip resample (FreeSWITCH's own resampler is not ours; soxr VHQ stands in)."""
    if in_rate == out_rate or not pcm:
        return pcm
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    y = soxr.resample(x, in_rate, out_rate, "VHQ")
    return (np.clip(np.round(y * 32768), -32768, 32767).astype("<i2")).tobytes()


def read_sound_file(path: str, channel_rate: int, ptime_ms: int, loss_samples: int) -> bytes:
    """The PCM a playback of ``path`` writes to the caller, at the channel rate, padded."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise SoundFileError(f"cannot open {path}: {e.strerror}") from None
    if stat.S_ISFIFO(st.st_mode):
        # REF: a FIFO blocks the call's thread for 2 s reads; not emulated, refused loudly.
        raise SoundFileError(f"{path} is a FIFO: FreeSWITCH would block this call (REF); not emulated")
    if st.st_size > MAX_FILE_BYTES:
        raise SoundFileError(f"{path}: {st.st_size} bytes is larger than the emulator's limit")
    rate = file_rate(path)
    if rate is not None:
        pcm = Path(path).read_bytes()
    elif path.lower().endswith((".wav", ".wave")):
        try:
            with wave.open(path, "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise SoundFileError(f"{path}: only 16-bit mono wav is emulated")
                rate = w.getframerate()
                pcm = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as e:
            raise SoundFileError(f"{path}: bad wav: {e}") from None
    else:
        raise SoundFileError(f"{path}: format not emulated (raw .rNN or .wav only)")
    pcm = pcm[: len(pcm) // 2 * 2]
    if rate != channel_rate:
        pcm = resample_clip(pcm, rate, channel_rate)[loss_samples * 2 :]
    frame = channel_rate * ptime_ms // 1000 * 2
    if len(pcm) % frame:
        pcm += bytes(frame - len(pcm) % frame)
    return pcm


@dataclass(slots=True)
class HeardFrame:
    tick: int  # frame index on the channel's clock (ptime each)
    time: float  # loop time when it was "sent"
    pcm: bytes
    source: str  # the file path it came from, or "silence" (send_silence_when_idle on a park)
    stream: int = 0  # samples of jambonz stream audio added to it (see jambonz.py)


@dataclass
class Ear:
    """What the caller heard: one entry per RTP packet sent to them. No packet = a hole (REF idle park)."""

    rate: int
    ptime_ms: int
    frames: list[HeardFrame] = field(default_factory=list)

    def add(self, tick: int, time: float, pcm: bytes, source: str, stream: int = 0) -> None:
        self.frames.append(HeardFrame(tick, time, pcm, source, stream))

    def pcm(self) -> bytes:
        return b"".join(f.pcm for f in self.frames)

    def timeline(self, from_tick: int | None = None) -> bytes:
        """Heard audio on the channel clock, holes as silence, starting at ``from_tick``."""
        if not self.frames:
            return b""
        start = self.frames[0].tick if from_tick is None else from_tick
        fb = self.rate * self.ptime_ms // 1000 * 2
        end = self.frames[-1].tick + 1
        out = bytearray((end - start) * fb)
        for f in self.frames:
            if f.tick >= start:
                i = (f.tick - start) * fb
                out[i : i + fb] = f.pcm
        return bytes(out)

    def gaps(self) -> list[tuple[int, int]]:
        """(after tick, missing frames) for every hole between heard frames."""
        out = []
        for a, b in zip(self.frames, self.frames[1:]):
            if b.tick - a.tick > 1:
                out.append((a.tick, b.tick - a.tick - 1))
        return out


class Mouth:
    """The caller's voice: clips queued at the channel rate, read one ptime per tick.

    Each clip is resampled whole to any fork rate the first time that rate is asked for,
    standing in for FreeSWITCH's resampler (REF: a 16k fork of a PCMU call is resampled by
    FreeSWITCH itself)."""

    def __init__(self, rate: int, ptime_ms: int) -> None:
        self.rate = rate
        self.ptime_ms = ptime_ms
        self._clips: list[dict[int, bytes]] = []
        self._frame = 0  # frame index within the first clip
        self.spoke_ticks: list[int] = []

    def say(self, pcm: bytes) -> None:
        self._clips.append({self.rate: pcm})

    @property
    def speaking(self) -> bool:
        return bool(self._clips)

    def _at(self, clip: dict[int, bytes], rate: int) -> bytes:
        if rate not in clip:
            clip[rate] = resample_clip(clip[self.rate], self.rate, rate)
        return clip[rate]

    def frame(self, rates: tuple[int, ...]) -> dict[int, bytes] | None:
        """This tick's frame at the channel rate and at each of ``rates``; None when silent."""
        if not self._clips:
            return None
        clip = self._clips[0]
        out = {}
        for r in (self.rate, *rates):
            fb = r * self.ptime_ms // 1000 * 2
            chunk = self._at(clip, r)[self._frame * fb : (self._frame + 1) * fb]
            out[r] = chunk + bytes(fb - len(chunk))
        self._frame += 1
        fb0 = self.rate * self.ptime_ms // 1000 * 2
        if self._frame * fb0 >= len(clip[self.rate]):
            self._clips.pop(0)
            self._frame = 0
        return out
