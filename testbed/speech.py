"""Speech clips for tests, demos and benchmarks: the WAVs shipped in ``tests/data``.

The files are committed because CI may have no ``espeak-ng``. :func:`ensure_assets` makes any
that are missing, and only when ``espeak-ng`` is on ``PATH``; :func:`load_wav` reads one as
PCM s16le mono at the rate the caller asks for (one soxr pass over the whole clip, so no
frame-boundary clicks).

How the clips were made is in ``tests/data/README.md``; :data:`CLIPS` is the recipe.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

__all__ = [
    "BOT_ANSWER",
    "sentences_with_pauses",
    "CALLER_BARGEIN",
    "CALLER_QUESTION",
    "CLIPS",
    "DATA_DIR",
    "Clip",
    "ensure_assets",
    "load_wav",
    "read_wav",
    "write_wav",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
CALLER_QUESTION = DATA_DIR / "caller_question.wav"
CALLER_BARGEIN = DATA_DIR / "caller_bargein.wav"
BOT_ANSWER = DATA_DIR / "bot_answer.wav"


@dataclass(frozen=True, slots=True)
class Clip:
    """How one shipped clip is synthesised."""

    path: Path
    text: str
    rate: int  # sample rate of the file we ship
    voice: str = "en-us"
    words_per_minute: int = 175


CLIPS: tuple[Clip, ...] = (
    Clip(CALLER_QUESTION, "Hello, I would like to check the status of my order please.", 16000, "en-us", 250),
    Clip(CALLER_BARGEIN, "Wait, stop, stop.", 16000, "en-us", 230),
    Clip(
        BOT_ANSWER,
        "Thank you for calling voicefork. Your order shipped yesterday and will arrive on Friday. "
        "Is there anything else I can help you with today?",
        24000,
        "en-us+f3",
        260,
    ),
)

_TRIM_DBFS = -50.0  # silence threshold for trimming espeak's leading/trailing silence
_MARGIN_S = 0.08  # silence kept either side after trimming


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Return ``(pcm_s16le_mono, rate)``; raise ValueError for anything but 16-bit PCM."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        channels = w.getnchannels()
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    if channels != 1:
        samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels).astype(np.int32)
        data = samples.mean(axis=1).astype("<i2").tobytes()
    return data, rate


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    """Write PCM s16le mono as a WAV file."""
    if len(pcm) % 2:
        raise ValueError("PCM s16le must have an even number of bytes")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole clip of PCM s16le mono in one pass."""
    if in_rate == out_rate:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2")
    y = soxr.resample(x, in_rate, out_rate, quality="VHQ")
    return np.asarray(y, dtype="<i2").tobytes()


def load_wav(path: str | Path, rate: int) -> bytes:
    """Read a WAV as PCM s16le mono at ``rate`` Hz (resampled with soxr when it differs)."""
    if not 8000 <= rate <= 192000:
        raise ValueError(f"rate must be 8000..192000 Hz, got {rate}")
    pcm, file_rate = read_wav(path)
    return resample(pcm, file_rate, rate)


def _trim(samples: np.ndarray, rate: int) -> np.ndarray:
    threshold = 32768.0 * 10 ** (_TRIM_DBFS / 20)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples
    margin = int(_MARGIN_S * rate)
    return samples[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def synthesize(clip: Clip, espeak: str = "espeak-ng") -> bytes:
    """Run espeak-ng for ``clip`` and return trimmed PCM at ``clip.rate``."""
    out = subprocess.run(
        [espeak, "-v", clip.voice, "-s", str(clip.words_per_minute), "--stdout", clip.text],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    # espeak-ng streams to stdout with placeholder chunk sizes: read the fmt rate, then every byte
    # after the "data" chunk header, and ignore the sizes.
    if out[:4] != b"RIFF" or out[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV")
    rate = int.from_bytes(out[24:28], "little")
    at = out.find(b"data", 12)
    if at < 0:
        raise ValueError("espeak-ng WAV has no data chunk")
    data = out[at + 8 :]
    data = data[: len(data) - len(data) % 2]
    samples = _trim(np.frombuffer(data, dtype="<i2"), rate)
    return resample(samples.tobytes(), rate, clip.rate)


def ensure_assets(*, force: bool = False) -> list[Path]:
    """Make any missing clip with espeak-ng (all of them when ``force``); return the paths written.

    Without espeak-ng on PATH this writes nothing: the committed files are what tests use.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return []
    written = []
    for clip in CLIPS:
        if clip.path.exists() and not force:
            continue
        clip.path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(clip.path, synthesize(clip, espeak), clip.rate)
        written.append(clip.path)
    return written


if __name__ == "__main__":  # python -m testbed.speech [--force]
    import sys

    for p in ensure_assets(force="--force" in sys.argv[1:]):
        print(f"wrote {p}")
    for clip in CLIPS:
        if clip.path.exists():
            pcm, r = read_wav(clip.path)
            print(f"{clip.path.name}: {r} Hz, {len(pcm) / 2 / r:.2f} s, {clip.path.stat().st_size} bytes")


def sentences_with_pauses(path: str | Path, pause_ms: int = 300, rate: int = 24000) -> tuple[str | Path, list[int]]:
    """The bot's answer with its two sentence breaks opened to ``pause_ms`` of silence, as
    sentence-by-sentence TTS sends it (espeak's own breaks at 260 wpm are ~60 ms). Returns
    the WAV path and the pieces' start offsets in the result, in samples at ``rate``."""
    pcm, file_rate = read_wav(BOT_ANSWER)
    if file_rate != rate:
        raise ValueError(f"{BOT_ANSWER} is {file_rate} Hz, expected {rate}")
    x = np.frombuffer(pcm, "<i2")
    w = x[: len(x) // 240 * 240].reshape(-1, 240).astype(np.float64)  # 10 ms windows
    quiet = 10 * np.log10(np.mean(w * w, axis=1) / 32768**2 + 1e-12) < -50
    runs, i = [], 0  # (start window, length) of quiet runs inside the speech
    while i < len(quiet):
        j = i
        while j < len(quiet) and quiet[j]:
            j += 1
        if j > i and i > 0 and j < len(quiet):
            runs.append((i, j - i))
        i = j + 1
    cuts = sorted(sorted(runs, key=lambda r: -r[1])[:2])
    pieces, starts, prev = [], [], 0
    for start, length in cuts:
        mid = (start + length // 2) * 240
        pieces.append(x[prev:mid])
        pieces.append(np.zeros(rate * pause_ms // 1000, "<i2"))
        prev = mid
    pieces.append(x[prev:])
    out = np.concatenate(pieces)
    pos = 0
    for piece in pieces:
        if piece.any():
            starts.append(pos)
        pos += len(piece)
    write_wav(path, out.tobytes(), rate)
    return path, starts
