"""The bench caller's voice: continuous, never silent, speech-like, so that silence at the
connector can be told apart from speech frame by frame (:mod:`testbed.bench.framecheck`).

Band-limited noise (100-3400 Hz, the telephone band) under a 4 Hz syllable envelope that never
drops below 0.4 of its peak, at -20 dBFS RMS: every 20 ms frame has an RMS between about 1000 and
3300, nowhere near the RMS ~1 that REF ("What the AI hears while the bot plays") measured for the
frames FreeSWITCH blanks. It is μ-law coded once (what the caller's PCMU carries) and shared by
every call, each reading it from its own offset, so packet ``k`` of a call is
``payload(k)``, and :meth:`CallerVoice.reference` returns what the switch decodes from packets
``k0..k1`` for matching a received frame to the packet it came from. The loop is
``LOOP_FRAMES`` long (16 s), far longer than any search window.
"""

from __future__ import annotations

import numpy as np

from testbed.sip_caller import ulaw_decode, ulaw_encode

__all__ = ["CallerVoice", "LOOP_FRAMES", "FRAME_SAMPLES"]

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
LOOP_FRAMES = 800  # 16 s


def _signal(seconds: float, seed: int) -> np.ndarray:
    rate = 8000
    n = int(rate * seconds)
    x = np.random.default_rng(seed).standard_normal(n)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[(f < 100) | (f > 3400)] = 0
    x = np.fft.irfft(spec, n)
    env = 0.7 + 0.3 * np.sin(2 * np.pi * 4 * np.arange(n) / rate)
    x = x * env / (np.sqrt(np.mean((x * env) ** 2)) + 1e-9) * 3277
    return np.clip(np.rint(x), -32768, 32767).astype("<i2")


class CallerVoice:
    """One shared μ-law loop; call ``i`` starts ``i * 131`` frames in."""

    def __init__(self, seed: int = 13) -> None:
        pcm = _signal(LOOP_FRAMES * FRAME_SAMPLES / 8000, seed).tobytes()
        self.ulaw = ulaw_encode(pcm)
        self.decoded = np.frombuffer(ulaw_decode(self.ulaw), "<i2").astype(np.float32)
        self._frames = [self.ulaw[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(LOOP_FRAMES)]

    @staticmethod
    def offset(call_idx: int) -> int:
        return (call_idx * 131) % LOOP_FRAMES

    def payload(self, call_idx: int, k: int) -> bytes:
        """The 160 μ-law bytes of packet ``k`` of call ``call_idx``."""
        return self._frames[(self.offset(call_idx) + k) % LOOP_FRAMES]

    def reference(self, call_idx: int, k0: int, k1: int) -> np.ndarray:
        """What the switch decodes from packets ``k0`` (inclusive) to ``k1`` (exclusive), float32 at 8 kHz."""
        start = (self.offset(call_idx) + k0) * FRAME_SAMPLES
        idx = np.arange(start, start + (k1 - k0) * FRAME_SAMPLES) % (LOOP_FRAMES * FRAME_SAMPLES)
        return self.decoded[idx]
