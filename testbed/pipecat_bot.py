"""A Pipecat bot written for Twilio Media Streams, as Pipecat's Twilio examples write one.

Run by the Pipecat venv (``just pipecat-env``: pipecat-ai 1.14.0, whose soxr~=1.0.0 pin and
onnxruntime/numba would change ours), never imported by voicefork. Nothing in it knows
about FreeSWITCH: FastAPI WebSocket, ``parse_telephony_websocket``, ``TwilioFrameSerializer``
with auto hang-up, ``FastAPIWebsocketTransport``. The only voicefork-specific line is the
REST ``base_url`` (Pipecat's own option for a Twilio-API-compatible server).

The bot waits for ``--listen-ms`` of caller audio, answers with ``--wav`` and ends the call
(EndWorkerFrame → the serializer POSTs Status=completed). With ``--bargein`` it interrupts
itself when the caller speaks over it (Pipecat's InterruptionFrame → Twilio ``clear``),
then ends the call a second later. One JSON line per event on stdout (``LISTENING`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import wave

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


class Answerer(FrameProcessor):
    """Listens, answers with a WAV, ends the call (optionally cut short by a barge-in)."""

    def __init__(self, pcm: bytes, rate: int, listen_ms: int, bargein: bool) -> None:
        super().__init__()
        self.pcm, self.rate, self.listen_ms, self.bargein = pcm, rate, listen_ms, bargein
        self.heard_ms = 0.0
        self.answered_at: float | None = None
        self.interrupted = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.heard_ms += len(frame.audio) / 2 / frame.sample_rate * 1000
            if self.answered_at is None and self.heard_ms >= self.listen_ms:
                await self._answer()
            elif self.bargein and self.answered_at is not None and not self.interrupted:
                level = np.sqrt(np.mean(np.frombuffer(frame.audio, "<i2").astype(np.float64) ** 2)) if frame.audio else 0
                # The caller's own speech (the fork carries the caller only): -30 dBFS and up.
                if time.monotonic() - self.answered_at > 0.5 and level > 1000:
                    self.interrupted = True
                    say("interrupted", heard_ms=round(self.heard_ms))
                    await self.broadcast_interruption()
                    await asyncio.sleep(1.0)
                    await self.push_frame(EndWorkerFrame())
            return  # the caller's audio goes no further (no STT here)
        await self.push_frame(frame, direction)

    async def _answer(self) -> None:
        self.answered_at = time.monotonic()
        say("answer", heard_ms=round(self.heard_ms))
        step = self.rate // 50 * 2  # 20 ms
        for i in range(0, len(self.pcm), step):
            await self.push_frame(OutputAudioRawFrame(audio=self.pcm[i:i + step], sample_rate=self.rate, num_channels=1))
        if not self.bargein:
            await self.push_frame(EndWorkerFrame())  # after the answer: the output flushes it first


def make_app(args: argparse.Namespace) -> FastAPI:
    with wave.open(args.wav) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    app = FastAPI()

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        transport_type, call_data = await parse_telephony_websocket(websocket)
        say("start", transport=transport_type, stream_id=call_data["stream_id"], call_id=call_data["call_id"],
            from_number=call_data.get("from"), to_number=call_data.get("to"), body=call_data.get("body"))
        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"],
            call_sid=call_data["call_id"],
            account_sid=os.environ["TWILIO_ACCOUNT_SID"],
            auth_token=os.environ["TWILIO_AUTH_TOKEN"],
            base_url=args.base_url,
        )
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False,
                                   serializer=serializer),
        )
        task = PipelineTask(
            Pipeline([transport.input(), Answerer(pcm, rate, args.listen_ms, args.bargein), transport.output()]),
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=rate),
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client) -> None:  # noqa: ANN001
            say("disconnected")
            await task.cancel()

        await PipelineRunner(handle_sigint=False).run(task)
        say("ended")

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--wav", required=True)
    p.add_argument("--base-url", required=True, help="the fork server, for Twilio's REST hang-up")
    p.add_argument("--listen-ms", type=int, default=1000)
    p.add_argument("--bargein", action="store_true")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("PIPECAT_LOG_LEVEL", "INFO"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)  # connections wait in the backlog until uvicorn runs: LISTENING is true now
    say("LISTENING", port=sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(make_app(args), log_level="warning"))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
