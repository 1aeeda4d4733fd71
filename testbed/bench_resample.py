"""Resampler benchmark: voicefork's polyphase FIR against soxr, streamed in 20 ms frames.

For the caller path (8k→16k) and the TTS ratios (16k→8k, 24k→8k, 24k→16k) it compares

* ``fir``       — :class:`fork_server.pcm.StreamResampler` (``kind="fir"``), int16 in and out;
* ``soxr-hq``   — ``soxr.ResampleStream`` HQ, float32, one stream for the whole signal;
* ``soxr-hq-vr``— the same with ``vr=True`` (steady release);
* ``stateless`` — ``soxr.resample`` HQ on each 20 ms frame on its own (what never to do).

Columns: µs per 20 ms frame; ``delay_ms`` — how late the content is (impulse peak against
where it went in, refined by the phase of a 500 Hz sine); ``hold_avg_ms`` / ``hold_max_ms`` — input time not yet
answered by output after each frame (soxr's bursts); ``latency_ms`` = delay + worst hold;
``snr_db`` — worst over sines 100 Hz … 0.425·min(rate) at −6 dBFS, error against the
analytic sine late by ``delay_ms``, all frequencies (so images and aliases count);
``inband_snr_db`` — the same with only the error in the band; ``edge_err_db`` — worst error
within 4 samples of a 20 ms output frame edge, re the sine's amplitude.

Run: ``python -m testbed.bench_resample [seconds]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import soxr

from fork_server.pcm import StreamResampler, array_to_pcm, pcm_to_array

__all__ = ["METHODS", "RATIOS", "main", "run"]

RATIOS = ((8000, 16000), (16000, 8000), (24000, 8000), (24000, 16000))
METHODS = ("fir", "soxr-hq", "soxr-hq-vr", "stateless")
_AMP = 16384.0  # -6 dBFS
_EDGE = 4  # samples either side of a frame edge


class _Soxr:
    """soxr behind the same process/flush shape, float32 so nothing is dithered."""

    def __init__(self, in_rate: int, out_rate: int, method: str) -> None:
        self.in_rate, self.out_rate, self.method = in_rate, out_rate, method
        if method != "stateless":
            vr = method == "soxr-hq-vr"
            self.stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ", vr=vr)

    def process(self, pcm: bytes) -> bytes:
        x = pcm_to_array(pcm).astype(np.float32) / 32768
        if self.method == "stateless":
            y = soxr.resample(x, self.in_rate, self.out_rate, "HQ")
        else:
            y = self.stream.resample_chunk(x)
        return array_to_pcm(y.astype(np.float64) * 32768)

    def flush(self) -> bytes:
        if self.method == "stateless":
            return b""
        return array_to_pcm(self.stream.resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float64) * 32768)


def _make(method: str, in_rate: int, out_rate: int):
    return StreamResampler(in_rate, out_rate, kind="fir") if method == "fir" else _Soxr(in_rate, out_rate, method)


def _stream(r, pcm: bytes, frame_bytes: int) -> tuple[np.ndarray, list[int]]:
    """Output samples, and the output count after each frame."""
    parts, counts, total = [], [], 0
    for i in range(0, len(pcm), frame_bytes):
        out = r.process(pcm[i : i + frame_bytes])
        parts.append(out)
        total += len(out) // 2
        counts.append(total)
    parts.append(r.flush())
    return pcm_to_array(b"".join(parts)).astype(np.float64), counts


def _us_per_frame(method: str, in_rate: int, out_rate: int, seconds: float) -> float:
    frame = in_rate // 50
    x = np.random.default_rng(1).normal(0, 3000, int(in_rate * seconds))
    pcm = array_to_pcm(x)
    frames = [pcm[i : i + 2 * frame] for i in range(0, len(pcm), 2 * frame)]
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        r = _make(method, in_rate, out_rate)
        t0 = time.perf_counter()
        for f in frames:
            r.process(f)
        best = min(best, time.perf_counter() - t0)
    return best / len(frames) * 1e6


def _delay_ms(method: str, in_rate: int, out_rate: int) -> tuple[float, float, float]:
    """(content delay, mean hold-back, worst hold-back), ms, from an impulse streamed in 20 ms frames."""
    frame = in_rate // 50
    x = np.zeros(in_rate)  # 1 s
    at = in_rate // 2 + 3
    x[at] = 20000
    y, counts = _stream(_make(method, in_rate, out_rate), array_to_pcm(x), 2 * frame)
    k = int(np.argmax(y))
    peak = k + 0.5 * (y[k - 1] - y[k + 1]) / (y[k - 1] - 2 * y[k] + y[k + 1])
    coarse = (peak / out_rate - at / in_rate) * 1000  # a parabola through a sinc peak is off by ~0.1 sample
    delay = coarse + _phase_correction_ms(method, in_rate, out_rate, coarse)
    held = [((i + 1) * frame / in_rate - c / out_rate) * 1000 for i, c in enumerate(counts)]
    return delay, float(np.mean(held[5:])), max(held)


def _phase_correction_ms(method: str, in_rate: int, out_rate: int, coarse_ms: float) -> float:
    """Refine a delay estimate with the phase of a 500 Hz sine (linear phase: group = phase delay)."""
    freq = 500.37
    pcm = array_to_pcm(_AMP * np.sin(2 * np.pi * freq * np.arange(in_rate) / in_rate))
    y, _ = _stream(_make(method, in_rate, out_rate), pcm, 2 * (in_rate // 50))
    t = np.arange(y.size)[out_rate // 10 : -out_rate // 10] / out_rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    a, b = np.linalg.lstsq(basis, y[out_rate // 10 : -out_rate // 10], rcond=None)[0]
    fine = -np.arctan2(b, a) / (2 * np.pi * freq) * 1000  # delay modulo one period
    period = 1000 / freq
    return float((fine - coarse_ms + period / 2) % period - period / 2)


def _quality(method: str, in_rate: int, out_rate: int, delay_ms: float) -> tuple[float, float, float]:
    """(worst SNR, worst in-band SNR, worst edge error), dB, over sines across the band."""
    band = 0.425 * min(in_rate, out_rate)
    frame_out = out_rate // 50
    snrs, inband, edges = [], [], []
    for freq in np.linspace(100, band, 9) + 0.37:  # off the sample grid: rounding noise is not periodic
        t = np.arange(in_rate) / in_rate
        pcm = array_to_pcm(_AMP * np.sin(2 * np.pi * freq * t))
        y, _ = _stream(_make(method, in_rate, out_rate), pcm, 2 * (in_rate // 50))
        ref = _AMP * np.sin(2 * np.pi * freq * (np.arange(y.size) / out_rate - delay_ms / 1000))
        lo, hi = out_rate // 10, y.size - out_rate // 10
        lo -= lo % frame_out
        err, sig = (y - ref)[lo:hi], ref[lo:hi]
        snrs.append(10 * np.log10(np.sum(sig**2) / np.sum(err**2)))
        spectrum = np.fft.rfft(err)
        freqs = np.fft.rfftfreq(err.size, 1 / out_rate)
        in_err = np.sum(np.abs(spectrum[freqs <= band]) ** 2) * 2 / err.size
        inband.append(10 * np.log10(np.sum(sig**2) / max(in_err, 1e-30)))
        pos = np.arange(err.size) % frame_out
        edge = np.abs(err[(pos < _EDGE) | (pos >= frame_out - _EDGE)]).max()
        edges.append(20 * np.log10(max(edge, 1e-9) / _AMP))
    return min(snrs), min(inband), max(edges)


def run(seconds: float = 10) -> list[dict]:
    """One row per ratio and method; see the module docstring for the columns."""
    rows = []
    for in_rate, out_rate in RATIOS:
        for method in METHODS:
            delay, hold_avg, hold_max = _delay_ms(method, in_rate, out_rate)
            snr, inband, edge = _quality(method, in_rate, out_rate, delay)
            row = {
                "ratio": f"{in_rate // 1000}k→{out_rate // 1000}k",
                "method": method,
                "us_per_frame": _us_per_frame(method, in_rate, out_rate, seconds),
                "delay_ms": delay,
                "hold_avg_ms": hold_avg,
                "hold_max_ms": hold_max,
                "latency_ms": delay + max(hold_max, 0.0),
                "snr_db": snr,
                "inband_snr_db": inband,
                "edge_err_db": edge,
            }
            rows.append({k: float(v) if isinstance(v, float) else v for k, v in row.items()})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    rows = run(float(args[0]) if args else 10)
    cols = tuple(rows[0])
    print(" ".join(f"{c:>13}" for c in cols))
    for row in rows:
        print(" ".join(f"{row[c]:>13.1f}" if isinstance(row[c], float) else f"{row[c]:>13}" for c in cols))


if __name__ == "__main__":
    main()
