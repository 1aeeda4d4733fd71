"""A frame-energy voice activity detector (pure: bytes in, decisions out, no clock).

Speech starts after ``onset_ms`` of consecutive frames louder than ``threshold_dbfs`` and ends
after ``hangover_ms`` of consecutive quieter frames. Time is the position in the audio stream,
so tests may feed audio faster than real time and get the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EnergyVad", "SpeechEnded", "SpeechStarted", "frame_dbfs"]

_FULL_SCALE_POWER = 32768.0 * 32768.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech confirmed; ``start_ms`` is where its first loud frame began in the stream."""

    start_ms: float
    at_ms: float  # stream position when the decision was made (end of the onset)


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Silence lasted the hangover; ``end_ms`` is where the last loud frame ended."""

    start_ms: float
    end_ms: float
    at_ms: float  # stream position when the decision was made (end of the hangover)

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


def frame_dbfs(pcm: bytes) -> float:
    """RMS level of PCM s16le in dBFS (full-scale square wave = 0; digital silence = -inf)."""
    if len(pcm) < 2:
        return -math.inf
    x = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
    power = float(np.dot(x, x)) / x.size
    if power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(power / _FULL_SCALE_POWER)


class EnergyVad:
    """Feed frames with :meth:`process`; it returns a decision when the state changes."""

    def __init__(
        self,
        *,
        threshold_dbfs: float = -40.0,
        hangover_ms: float = 400.0,
        onset_ms: float = 40.0,
        rate: int = 16000,
    ) -> None:
        if not -120.0 < threshold_dbfs < 0.0:
            raise ValueError(f"threshold_dbfs must be in (-120, 0), got {threshold_dbfs}")
        if hangover_ms < 0 or onset_ms < 0:
            raise ValueError("hangover_ms and onset_ms must be >= 0")
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.threshold_dbfs = threshold_dbfs
        self.hangover_ms = hangover_ms
        self.onset_ms = onset_ms
        self._bytes_per_ms = rate * 2 / 1000.0
        self._threshold_power = _FULL_SCALE_POWER * 10.0 ** (threshold_dbfs / 10.0)
        self.position_ms = 0.0
        self.speaking = False
        self._loud_since: float | None = None  # start of the current loud run (onset counting)
        self._last_loud_end = 0.0
        self._speech_start = 0.0

    def is_loud(self, pcm: bytes) -> bool:
        if len(pcm) < 2:
            return False
        x = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
        return float(np.dot(x, x)) / x.size > self._threshold_power

    def process(self, pcm: bytes) -> SpeechStarted | SpeechEnded | None:
        """Advance by one frame of PCM s16le mono; return a decision or None."""
        begin = self.position_ms
        end = begin + len(pcm) / self._bytes_per_ms
        self.position_ms = end
        loud = self.is_loud(pcm)
        if self.speaking:
            if loud:
                self._last_loud_end = end
                return None
            if end - self._last_loud_end >= self.hangover_ms:
                self.speaking = False
                self._loud_since = None
                return SpeechEnded(self._speech_start, self._last_loud_end, end)
            return None
        if not loud:
            self._loud_since = None
            return None
        if self._loud_since is None:
            self._loud_since = begin
        self._last_loud_end = end
        if end - self._loud_since >= self.onset_ms:
            self.speaking = True
            self._speech_start = self._loud_since
            return SpeechStarted(self._loud_since, end)
        return None
