"""Comparing what was heard with what was sent: SNR at the best alignment, in the telephone band.

Shared by the emulator end-to-end tests and the real-FreeSWITCH tests, so both judge audio
the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["snr_db", "band_snr", "shifted", "best_aligned_snr", "lag_of", "blockwise"]


def snr_db(ref, got):
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    err = np.sum((ref - got) ** 2)
    return 10 * np.log10(np.sum(ref**2) / max(err, 1e-9))


def band_snr(ref, got, rate, hi=3400.0, block=1024):
    """SNR counting only the telephone band (≤ 3.4 kHz), from Hann-windowed blocks: the
    resamplers differ above it by design, and a Hann window keeps that out of the band."""
    win = np.hanning(block)
    keep = np.fft.rfftfreq(block, 1 / rate) <= hi
    sig = err = 0.0
    for i in range(0, min(len(ref), len(got)) - block, block // 2):
        a = np.fft.rfft(ref[i : i + block] * win)[keep]
        b = np.fft.rfft(got[i : i + block] * win)[keep]
        sig += np.sum(np.abs(a) ** 2)
        err += np.sum(np.abs(a - b) ** 2)
    return 10 * np.log10(sig / max(err, 1e-9))


def shifted(x, samples):
    """``x`` delayed by a fractional number of samples (band-limited, via the FFT)."""
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    spec *= np.exp(-2j * np.pi * np.fft.rfftfreq(2 * n) * samples)
    return np.fft.irfft(spec, 2 * n)[:n]


def best_aligned_snr(ref, got, in_band=False, rate=16000):
    """SNR of ``got`` against ``ref`` at the best alignment, to 1/20 sample (resamplers delay by
    fractions of a sample). The coarse lag comes from an FFT cross-correlation."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    n = 1 << int(np.ceil(np.log2(len(ref) + len(got))))
    xc = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(xc[: len(got)]))
    m = min(len(ref), len(got) - lag) - 8
    seg = got[lag : lag + m]
    b = seg[16:-16]

    def score(frac):
        a = shifted(ref[:m], frac)[16:-16]  # the FFT shift wraps at the ends
        return band_snr(a, b, rate) if in_band else snr_db(a, b)

    best = max(np.arange(-1.0, 1.0001, 0.05), key=score)
    fine = max(np.arange(best - 0.05, best + 0.0501, 0.002), key=score)
    return score(fine)


def lag_of(ref, heard, expect, search=1600):
    """Where ``ref`` sits in ``heard`` (samples), searched ±``search`` around ``expect``."""
    lo = max(0, expect - search)
    seg = heard[lo : lo + len(ref) + 2 * search]
    xc = np.correlate(seg, ref, mode="valid")
    return lo + int(np.argmax(xc))


def blockwise(ref, heard, rate=8000, block_ms=400, least_rms=300.0):
    """Each loud block of ``ref`` found again in ``heard``: ``(lag in samples, SNR dB)`` per block
    (in band, at its own best alignment), for a stream that may slide a few samples over time (the
    jambonz module puts one sample into the audio for every mark it is given: 1 per mark, measured
    on 1.10.12), where one lag for the whole clip would not hold. Quiet blocks (RMS under
    ``least_rms``) are skipped."""
    ref = np.asarray(ref, np.float64)
    heard = np.asarray(heard, np.float64)
    n = rate * block_ms // 1000
    out = []
    for b0 in range(0, len(ref) - n + 1, n):
        seg = ref[b0 : b0 + n]
        if np.sqrt(np.mean(seg * seg)) < least_rms:
            continue
        k = int(np.argmax(np.correlate(heard, seg, mode="valid")))
        window = heard[max(0, k - 32) : k + n + 32]
        out.append((k - b0, float(best_aligned_snr(seg, window, in_band=True, rate=rate))))
    return out
