"""voicefork.v1 against twilio (Twilio Media Streams), per 20 ms frame: ``just bench --protocol twilio``.

Rows, CPU µs (``time.process_time``, best of three) and bytes:

* ``hot path``: a caller frame from the fork socket to the connector's wire, in one process
  (:mod:`testbed.bench.hotpath`, 8 kHz PCMU call): voicefork resamples to 16 kHz and sends
  640 binary bytes; twilio keeps 8 kHz and sends μ-law in base64 in JSON.
* ``encode``: the dialect alone, one caller frame to its wire frame (voicefork: none).
* ``decode``: 20 ms of bot audio from its wire frame to PCM (voicefork: binary PCM at 16 kHz;
  twilio: JSON, base64, μ-law).

Run: ``python -m testbed.bench.protocol [frames]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from typing import Any, Callable

import numpy as np

from fork_server.dialects import TwilioDialect, VoiceforkDialect
from fork_server.dialects import messages as m
from fork_server.pcm import ulaw_encode

from . import hotpath

__all__ = ["run", "main"]

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def _best(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def _start(rate: int) -> m.Start:
    return m.Start(uuid=U, route="bench", from_="+1", to="+2", caller_name="x", language="en-US", sample_rate=rate)


def run(frames: int = 20000) -> list[dict[str, Any]]:
    speech = (np.sin(np.arange(320) * 0.3) * 8000).astype("<i2")
    rows = []
    for protocol in ("voicefork", "twilio"):
        hot = asyncio.run(hotpath._measure(8000, frames, protocol))
        if protocol == "voicefork":
            d: Any = VoiceforkDialect()
            frame = np.repeat(speech, 2).tobytes()[:640]  # 20 ms at 16 kHz
            tts = frame
            decode = lambda: d.receive_binary(tts)  # noqa: E731
        else:
            d = TwilioDialect("AC" + "0" * 32)
            d.encode(_start(8000))
            frame = speech.tobytes()  # 20 ms at 8 kHz
            tts = json.dumps({"event": "media", "streamSid": d.stream_sid,
                              "media": {"payload": base64.b64encode(ulaw_encode(frame)).decode()}})
            decode = lambda: d.receive_text(tts)  # noqa: E731
        batch = [frame]
        rows.append({
            "protocol": protocol,
            "hot_path_us": hot["us_per_frame"],
            "wire_bytes": hot["wire_bytes_per_frame"],
            "encode_us": round(_best(lambda: d.encode_audio(batch), frames), 2),
            "decode_us": round(_best(decode, frames), 2),
            "bot_frame_bytes": len(tts),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rows = run(int(args[0]) if args else 20000)
    print("connector protocol, per 20 ms frame (8 kHz PCMU call; CPU us, best of 3):")
    print(f"  {'protocol':<10} {'hot path us':>12} {'encode us':>10} {'decode us':>10} {'caller wire B':>14} {'bot frame B':>12}")
    for r in rows:
        print(f"  {r['protocol']:<10} {r['hot_path_us']:>12.1f} {r['encode_us']:>10.2f} {r['decode_us']:>10.2f} "
              f"{r['wire_bytes']:>14.1f} {r['bot_frame_bytes']:>12d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
