"""The reference connector: pure cores on bytes, then the server over loopback.

In the loopback tests a websockets client plays the fork server's side of protocol v1, written
from docs/DESIGN.md (this file imports nothing from fork_server either).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from testbed import speech
from testbed.connector import ConnectorServer
from testbed.connector import protocol as p
from testbed.connector.vad import EnergyVad, SpeechEnded, SpeechStarted, frame_dbfs

ROOT = Path(__file__).resolve().parents[2]
FRAME = 640
SILENCE = bytes(FRAME)


def start_msg(uuid: str = "call-1", **over: Any) -> dict[str, Any]:
    msg = {
        "type": "start",
        "version": 1,
        "resumed": False,
        "call": {
            "uuid": uuid,
            "route": "support",
            "from": "+15551230001",
            "to": "+15551230002",
            "caller_name": "Ada",
            "language": "en-US",
            "metadata": {"tier": "gold"},
        },
        "audio": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1, "frame_ms": 20, "offset_ms": 0},
    }
    msg.update(over)
    return msg


def frames(pcm: bytes) -> list[bytes]:
    pcm += bytes(-len(pcm) % FRAME)
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


def question() -> bytes:
    return speech.load_wav(speech.CALLER_QUESTION, 16000)


def bargein() -> bytes:
    return speech.load_wav(speech.CALLER_BARGEIN, 16000)


# --- speech assets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, rate, seconds",
    [
        (speech.CALLER_QUESTION, 16000, (1.5, 3.0)),
        (speech.CALLER_BARGEIN, 16000, (0.7, 1.5)),
        (speech.BOT_ANSWER, 24000, (4.0, 6.0)),
    ],
)
def test_shipped_wavs_are_small_mono_s16le_at_their_rate(path: Path, rate: int, seconds: tuple[float, float]):
    assert path.stat().st_size < 300_000
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, rate)
        assert seconds[0] < w.getnframes() / rate < seconds[1]


def test_load_wav_resamples_the_whole_clip():
    native = speech.load_wav(speech.BOT_ANSWER, 24000)
    at16 = speech.load_wav(speech.BOT_ANSWER, 16000)
    assert len(at16) % 2 == 0
    assert abs(len(at16) / 32000 - len(native) / 48000) < 0.002
    assert frame_dbfs(at16) == pytest.approx(frame_dbfs(native), abs=0.5)
    with pytest.raises(ValueError):
        speech.load_wav(speech.BOT_ANSWER, 100)


def test_ensure_assets_leaves_existing_files_alone():
    before = {c.path: c.path.stat().st_mtime_ns for c in speech.CLIPS}
    assert speech.ensure_assets() == []
    assert before == {c.path: c.path.stat().st_mtime_ns for c in speech.CLIPS}


# --- VAD (pure) ------------------------------------------------------------------------------------


def run_vad(pcm: bytes, **kw: Any) -> list[SpeechStarted | SpeechEnded]:
    vad = EnergyVad(**kw)
    return [d for f in frames(pcm) if (d := vad.process(f)) is not None]


def test_vad_finds_one_utterance_with_hangover():
    pcm = bytes(16000) + question() + bytes(32000)  # 0.5 s silence, speech, 1 s silence
    decisions = run_vad(pcm)
    assert [type(d) for d in decisions] == [SpeechStarted, SpeechEnded]
    started, ended = decisions
    assert 500 <= started.start_ms <= 700
    assert started.at_ms - started.start_ms >= 40
    speech_end_ms = 500 + len(question()) / 32
    assert speech_end_ms - 200 <= ended.end_ms <= speech_end_ms
    assert ended.at_ms - ended.end_ms >= 400


def test_vad_ignores_a_click_and_silence():
    click = np.zeros(320, dtype="<i2")
    click[100] = 30000
    assert run_vad(bytes(64000) + click.tobytes() + bytes(64000)) == []
    assert frame_dbfs(SILENCE) == -math.inf


def test_vad_threshold_in_dbfs():
    tone = (np.sin(np.arange(3200) * 2 * np.pi * 440 / 16000) * 32767 * 10 ** (-30 / 20) * math.sqrt(2)).astype("<i2")
    assert frame_dbfs(tone.tobytes()) == pytest.approx(-30, abs=0.2)
    assert run_vad(tone.tobytes(), threshold_dbfs=-35)
    assert not run_vad(tone.tobytes(), threshold_dbfs=-25)
    with pytest.raises(ValueError):
        EnergyVad(threshold_dbfs=3)


# --- protocol checks (pure) ------------------------------------------------------------------------


def kinds(events: list[p.ForkEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def violations(events: list[p.ForkEvent]) -> list[str]:
    return [e.message for e in events if isinstance(e, p.Violation)]


def test_valid_stream_has_no_violations():
    s = p.ForkStream()
    assert kinds(s.receive_text(json.dumps(start_msg()))) == ["Start"]
    assert kinds(s.receive_binary(SILENCE)) == ["CallerAudio"]
    assert kinds(s.receive_text('{"type":"dtmf","digit":"#","duration_ms":100}')) == ["Dtmf"]
    s.mark_sent("a")
    s.mark_sent("b")
    assert kinds(s.receive_text('{"type":"mark","name":"a","status":"played"}')) == ["MarkReport"]
    assert kinds(s.receive_text('{"type":"mark","name":"b","status":"cleared"}')) == ["MarkReport"]
    assert kinds(s.receive_text('{"type":"stop","reason":"hangup"}')) == ["Stop"]
    assert s.pending_marks == ()


@pytest.mark.parametrize(
    "first, expected",
    [
        (b"\x00" * 640, "binary frame 0: audio before start"),
        ('{"type":"dtmf","digit":"1","duration_ms":80}', "before start"),
        ('{"type":"start"', "malformed JSON"),
        ("[1,2]", "expected an object"),
        ('{"kind":"start"}', "no string 'type'"),
    ],
)
def test_what_may_not_come_first(first: str | bytes, expected: str):
    s = p.ForkStream()
    events = s.receive_binary(first) if isinstance(first, bytes) else s.receive_text(first)
    assert any(expected in v for v in violations(events)), violations(events)


def test_frame_sizes_and_unknown_types_are_violations_but_not_fatal():
    s = p.ForkStream()
    s.receive_text(json.dumps(start_msg()))
    assert violations(s.receive_binary(bytes(641))) == ["binary frame 0: 641 bytes, expected 640"]
    assert violations(s.receive_binary(bytes(320))) == ["binary frame 1: 320 bytes, expected 640"]
    assert violations(s.receive_binary(SILENCE)) == []
    assert s.bad_frames == 2
    assert violations(s.receive_text('{"type":"pause"}')) == ["text message 1 (pause): unknown type"]
    assert violations(s.receive_text('{"type":"__init__"}')) == ["text message 2 (__init__): unknown type"]
    assert violations(s.receive_text('{"type":"_on_start"}')) == ["text message 3 (_on_start): unknown type"]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"version": 2}, "version must be 1"),
        ({"resumed": "no"}, "resumed must be true or false"),
        ({"audio": {"encoding": "pcm_s16le", "sample_rate": 8000, "channels": 1, "frame_ms": 20}}, "audio must be"),
        ({"audio": {"encoding": "pcm_s16le", "sample_rate": 16000.0, "channels": 1, "frame_ms": 20}}, "audio must be"),
        ({"extra": 1}, "unexpected key 'extra'"),
        ({"call": {**start_msg()["call"], "uuid": ""}}, "uuid must be"),
        ({"call": {"uuid": "u", "route": "r", "language": "en", "metadata": {}}}, "missing key 'from'"),
        ({"call": {**start_msg()["call"], "from": 5}}, "from must be"),
        ({"call": {**start_msg()["call"], "metadata": []}}, "metadata must be"),
        ({"call": {**start_msg()["call"], "caller_name": None}}, "caller_name must be a string"),
        ({"call": {**start_msg()["call"], "to": "9" * 257}}, "to must be a string of at most 256"),
        ({"call": {**start_msg()["call"], "caller_name": "", "from": "\"${x}\"\n\u00e9"}}, None),
    ],
)
def test_start_is_checked_field_by_field(change: dict[str, Any], expected: str | None):
    v = violations(p.ForkStream().receive_text(json.dumps(start_msg(**change))))
    if expected is None:
        assert v == []
    else:
        assert any(expected in x for x in v), v


def test_start_twice_and_anything_after_stop():
    s = p.ForkStream()
    s.receive_text(json.dumps(start_msg()))
    assert "start sent twice" in violations(s.receive_text(json.dumps(start_msg())))[0]
    assert "reason must be one of" in violations(s.receive_text('{"type":"stop","reason":"bye"}'))[0]
    assert violations(s.receive_binary(SILENCE)) == ["binary frame 0: audio after stop"]
    assert "message after stop" in violations(s.receive_text('{"type":"dtmf","digit":"1","duration_ms":1}'))[0]


def test_mark_reports_must_match_what_was_sent_in_order():
    s = p.ForkStream()
    s.receive_text(json.dumps(start_msg()))
    assert "not pending" in violations(s.receive_text('{"type":"mark","name":"x","status":"played"}'))[0]
    s.mark_sent("a")
    s.mark_sent("b")
    assert "before earlier mark 'a'" in violations(s.receive_text('{"type":"mark","name":"b","status":"played"}'))[0]
    assert violations(s.receive_text('{"type":"mark","name":"a","status":"played"}')) == []
    assert "not pending" in violations(s.receive_text('{"type":"mark","name":"a","status":"played"}'))[0]
    s.mark_sent("c")
    assert "status must be" in violations(s.receive_text('{"type":"mark","name":"c","status":"done"}'))[0]


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"dtmf","digit":"E","duration_ms":100}',
        '{"type":"dtmf","digit":"12","duration_ms":100}',
        '{"type":"dtmf","digit":"1","duration_ms":-1}',
        '{"type":"dtmf","digit":"1","duration_ms":60001}',
        '{"type":"dtmf","digit":"1","duration_ms":true}',
        '{"type":"dtmf","digit":"1"}',
    ],
)
def test_bad_dtmf(text: str):
    s = p.ForkStream()
    s.receive_text(json.dumps(start_msg()))
    assert violations(s.receive_text(text))


def test_oversize_text_is_a_violation():
    s = p.ForkStream()
    s.receive_text(json.dumps(start_msg()))
    big = json.dumps({"type": "dtmf", "digit": "1", "duration_ms": 1, "pad": "x" * 70000})
    assert "more than 65536" in violations(s.receive_text(big))[0]


def test_builders_are_on_spec_and_refuse_bad_arguments():
    assert json.loads(p.clear()) == {"type": "clear"}
    assert json.loads(p.mark("seg-1")) == {"type": "mark", "name": "seg-1"}
    assert json.loads(p.hangup()) == {"type": "hangup", "after_playback": True}
    assert json.loads(p.hangup(after_playback=False, reason="done")) == {
        "type": "hangup", "after_playback": False, "reason": "done"
    }
    assert json.loads(p.transfer("sip:agent@example.com")) == {
        "type": "transfer", "target": "sip:agent@example.com", "after_playback": True
    }
    assert json.loads(p.send_dtmf("12#")) == {"type": "send_dtmf", "digits": "12#"}
    assert json.loads(p.audio_format(24000))["sample_rate"] == 24000
    bad_calls = [
        (p.mark, ""), (p.mark, "x" * 129), (p.mark, "tab\t"), (p.send_dtmf, "12E"), (p.send_dtmf, "1" * 33),
        (p.transfer, "a b"), (p.transfer, ""), (p.transfer, "sip:${x}@h"), (p.transfer, "sip:a b"), (p.audio_format, 96000), (p.audio_format, 16000.0),
    ]
    for builder, arg in bad_calls:
        with pytest.raises(ValueError):
            builder(arg)


# --- loopback: a fork-server stand-in --------------------------------------------------------------


class Fork:
    """The fork server's side of protocol v1, with everything received kept and timestamped."""

    def __init__(self, ws: ClientConnection, *, ack_marks: str | None = "played") -> None:
        self.ws = ws
        self.ack_marks = ack_marks  # answer each mark right away with this status (None: don't)
        self.received: list[tuple[float, str | bytes]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, *, token: str | None = None, subprotocols: list[str] | None = None,
                   ack_marks: str | None = "played") -> "Fork":
        headers = {"Authorization": f"Bearer {token}"} if token else None
        offer = ["voicefork.v1"] if subprotocols is None else subprotocols
        ws = await connect(url, subprotocols=offer or None,  # type: ignore[arg-type]
                           additional_headers=headers, compression=None, max_size=2 << 20)
        return cls(ws, ack_marks=ack_marks)

    async def _read(self) -> None:
        try:
            async for m in self.ws:
                self.received.append((time.monotonic(), m))
                if isinstance(m, str) and self.ack_marks:
                    msg = json.loads(m)
                    if msg["type"] == "mark":
                        await self.ws.send(json.dumps({"type": "mark", "name": msg["name"], "status": self.ack_marks}))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self._changed.set()

    def texts(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(m) for _, m in self.received if isinstance(m, str)]
        return [m for m in out if kind is None or m["type"] == kind]

    def audio(self) -> bytes:
        return b"".join(m for _, m in self.received if isinstance(m, bytes))

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; received {self.texts()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def wait_text(self, kind: str, name: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((m for m in self.texts(kind) if name is None or m.get("name") == name), None)

        await self.wait_for(lambda: find() is not None, timeout)
        return find()  # type: ignore[return-value]

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(obj))

    async def send_pcm(self, pcm: bytes, *, pace: float = 0.0) -> None:
        """Send as 640-byte frames; ``pace`` seconds between frames (0: as fast as the socket takes them)."""
        for f in frames(pcm):
            await self.ws.send(f)
            await asyncio.sleep(pace)

    async def stop(self, reason: str = "hangup") -> None:
        await self.send_json({"type": "stop", "reason": reason})
        await self.ws.close(1000)
        await self._reader


# --- script mode -----------------------------------------------------------------------------------


async def test_script_streams_the_answer_with_audio_format_and_marks():
    bot = speech.load_wav(speech.BOT_ANSWER, 24000)
    async with ConnectorServer("script") as server:
        fork = await Fork.open(server.url("/calls/support"))
        t0 = time.monotonic()
        await fork.send_json(start_msg("u-script"))
        await fork.wait_text("mark", "end", timeout=10)
        t_end = time.monotonic()
        await fork.stop()
        record = await server.wait_call("u-script")
        await record.wait_stopped()

    texts = fork.texts()
    assert texts[0] == {"type": "audio_format", "sample_rate": 24000, "encoding": "pcm_s16le", "channels": 1}
    first_audio_t = next(t for t, m in fork.received if isinstance(m, bytes))
    assert first_audio_t - t0 >= 0.2  # answer_delay_ms
    assert fork.audio() == bot  # every byte, in order
    names = [m["name"] for m in fork.texts("mark")]
    assert names == ["seg-1", "seg-2", "seg-3", "seg-4", "seg-5", "end"]
    # 5.1 s of speech at 3x real time, in 100 ms (4800-byte) messages
    assert 1.3 < t_end - first_audio_t < 4.0  # slack for a loaded CI machine; real time would be 5.1 s
    sizes = {len(m) for _, m in fork.received if isinstance(m, bytes)}
    assert max(sizes) == 4800
    # the record: what it got and what it sent
    assert record.violations == []
    assert record.path == "/calls/support" and record.subprotocol == "voicefork.v1"
    assert record.start == start_msg("u-script")
    assert [(m.name, m.status) for m in record.marks] == [(n, "played") for n in names]
    assert record.stop_reason == "hangup" and record.close_code == 1000
    assert record.tts_bytes_sent == len(bot)
    kinds_sent = [s.kind for s in record.sent if s.kind != "audio"]
    assert kinds_sent == ["audio_format"] + ["mark"] * 6
    assert all(a.t <= b.t for a, b in zip(record.sent, record.sent[1:]))


async def test_script_at_16k_sends_no_audio_format_and_marks_only_the_end():
    caller = question()
    async with ConnectorServer("script", wav=str(speech.CALLER_QUESTION), rate=16000, mark_every_ms=0,
                               answer_delay_ms=0, speed=20) as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.wait_text("mark", "end")
        await fork.stop()
    assert fork.texts() == [{"type": "mark", "name": "end"}]
    assert fork.audio() == caller


@pytest.mark.parametrize(
    "options, tail",
    [
        ({"hangup_after_playback": True}, [{"type": "hangup", "after_playback": True}]),
        ({"transfer_to": "sip:a@example.com"},
         [{"type": "transfer", "target": "sip:a@example.com", "after_playback": True}]),
        ({"send_dtmf": "12#", "hangup_after_playback": True},
         [{"type": "send_dtmf", "digits": "12#"}, {"type": "hangup", "after_playback": True}]),
        ({"send_dtmf": "0", "transfer_to": "1000"},
         [{"type": "send_dtmf", "digits": "0"}, {"type": "transfer", "target": "1000", "after_playback": True}]),
        ({}, []),
    ],
)
async def test_script_actions_after_the_last_mark(options: dict[str, Any], tail: list[dict[str, Any]]):
    async with ConnectorServer("script", speed=50, answer_delay_ms=0, **options) as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.wait_text("mark", "end")
        await asyncio.sleep(0.05)
        await fork.stop("connector_hangup" if tail else "hangup")
        record = await server.wait_call(0)
        await record.wait_stopped()
    texts = fork.texts()
    end_at = texts.index({"type": "mark", "name": "end"})
    assert texts[end_at + 1 :] == tail
    assert record.violations == []


def test_script_options_are_checked():
    with pytest.raises(ValueError, match="not both"):
        ConnectorServer("script", hangup_after_playback=True, transfer_to="1000")
    with pytest.raises(ValueError):
        ConnectorServer("script", send_dtmf="99X")
    with pytest.raises(TypeError, match="no option"):
        ConnectorServer("script", tts_duty=0.5)
    with pytest.raises(ValueError, match="unknown mode"):
        ConnectorServer("parrot")


async def test_bargein_sends_clear_and_stops_streaming():
    async with ConnectorServer("script", answer_delay_ms=0, hangup_after_playback=True) as server:
        fork = await Fork.open(server.url(), ack_marks=None)  # nothing "plays": marks stay pending
        await fork.send_json(start_msg())
        await fork.send_pcm(bytes(6400))  # the caller is quiet at first
        await fork.wait_for(lambda: len(fork.audio()) >= 24000)
        t_speech = time.monotonic()
        await fork.send_pcm(bargein() + bytes(3200))
        clear = await fork.wait_text("clear", timeout=2)
        t_clear = next(t for t, m in fork.received if isinstance(m, str) and json.loads(m) == clear)
        received_at_clear = len(fork.audio())
        await asyncio.sleep(0.5)  # streaming would have gone on at 3x
        # the fork server reports the pending marks cleared
        record = await server.wait_call(0)
        for name in [s.message["name"] for s in record.sent_of("mark")]:
            await fork.send_json({"type": "mark", "name": name, "status": "cleared"})
        await fork.stop()
        await record.wait_stopped()

    assert clear == {"type": "clear"}
    assert t_clear - t_speech < 1.0
    msgs = [m for _, m in fork.received]
    after_clear = msgs[msgs.index(p.clear()) + 1 :]
    assert not any(isinstance(m, bytes) for m in after_clear)
    assert len(fork.audio()) == received_at_clear < len(speech.load_wav(speech.BOT_ANSWER, 24000))
    assert not fork.texts("hangup")  # playback was cut: no hangup after it
    assert "end" not in [m["name"] for m in fork.texts("mark")]
    assert len(record.clears_sent) == 1 and record.clears_sent[0] == record.sent_of("clear")[0].t
    assert [v.kind for v in record.vad][:1] == ["speech_started"]
    assert record.violations == []


async def test_bargein_after_streaming_until_end_is_played():
    async with ConnectorServer("script", answer_delay_ms=0, speed=100) as server:
        fork = await Fork.open(server.url(), ack_marks=None)
        await fork.send_json(start_msg())
        await fork.wait_text("mark", "end")  # everything sent, nothing played yet
        await fork.send_pcm(bargein())
        await fork.wait_text("clear", timeout=2)
        await fork.stop()


async def test_no_bargein_when_disabled_or_after_end_played():
    async with ConnectorServer("script", answer_delay_ms=0, speed=100, bargein=False) as server:
        fork = await Fork.open(server.url(), ack_marks=None)
        await fork.send_json(start_msg())
        await fork.wait_text("mark", "end")
        await fork.send_pcm(bargein() + bytes(16000))
        await asyncio.sleep(0.2)
        await fork.stop()
    assert not fork.texts("clear")

    async with ConnectorServer("script", answer_delay_ms=0, speed=100) as server:
        fork = await Fork.open(server.url())  # marks played at once
        await fork.send_json(start_msg())
        await fork.wait_text("mark", "end")
        record = await server.wait_call(0)
        await record.wait_until(lambda r: r.mark_status("end") == "played")
        await fork.send_pcm(bargein() + bytes(16000))
        await record.wait_until(lambda r: len(r.vad) == 2)
        await fork.stop()
    assert not fork.texts("clear")


async def test_speak_after_first_utterance_waits_for_the_caller():
    async with ConnectorServer("script", speak_after_first_utterance=True, answer_delay_ms=0, speed=50) as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.send_pcm(bytes(16000) + question()[: len(question()) // 2])
        await asyncio.sleep(0.3)
        assert fork.received == []  # still talking
        await fork.send_pcm(question()[len(question()) // 2 :] + bytes(16000))
        await fork.wait_text("mark", "end")
        await fork.stop()
        record = await server.wait_call(0)
        await record.wait_stopped()
    ended = next(v for v in record.vad if v.kind == "speech_ended")
    assert ended.t <= record.sent[0].t
    assert record.violations == []


# --- echo mode -------------------------------------------------------------------------------------


async def test_echo_plays_back_the_utterance_then_marks():
    caller = bytes(8000) + question() + bytes(19200)  # 250 ms silence, speech, 600 ms silence
    async with ConnectorServer("echo") as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.send_pcm(caller)
        mark = await fork.wait_text("mark", timeout=5)
        await fork.stop()
        record = await server.wait_call(0)
        await record.wait_stopped()
    assert mark == {"type": "mark", "name": "echo-1"}
    echoed = fork.audio()
    assert not fork.texts("audio_format")  # 16 kHz
    assert echoed in record.audio()  # exactly a stretch of what the caller said
    assert record.audio() == b"".join(frames(caller))
    q = len(question())
    assert q - 6400 <= len(echoed) <= q + 6400  # speech ±200 ms of preroll/tail
    assert record.violations == [] and record.marks[0].name == "echo-1"


async def test_echo_handles_two_utterances_in_order():
    utterance = bargein() + bytes(16000)
    async with ConnectorServer("echo", speed=20) as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.send_pcm(bytes(3200) + utterance + utterance)
        await fork.wait_text("mark", "echo-2")
        await fork.stop()
    assert [m["name"] for m in fork.texts("mark")] == ["echo-1", "echo-2"]


# --- sink mode -------------------------------------------------------------------------------------


async def test_sink_counts_without_storing():
    async with ConnectorServer("sink") as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.send_pcm(bytes(FRAME * 250))
        await fork.stop()
        record = await server.wait_call(0)
        await record.wait_stopped()
    assert record.frame_count == 250 and record.audio_bytes == 250 * FRAME
    assert record.frames == [] and record.sent == [] and fork.received == []
    assert record.violations == [] and record.stop_reason == "hangup"


async def test_sink_speaks_bursts_with_duty_cycle_and_clears():
    async with ConnectorServer("sink", tts_duty=0.5, tts_burst_ms=200, speed=4, clear_every=2) as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.wait_for(lambda: len(fork.texts()) >= 4, timeout=5)
        await fork.stop()
        record = await server.wait_call(0)
        await record.wait_stopped()
    texts = fork.texts()[:4]
    assert texts == [{"type": "mark", "name": "burst-1"}, {"type": "clear"},
                     {"type": "mark", "name": "burst-3"}, {"type": "clear"}]
    # two whole bursts of 200 ms and two halves, at 16 kHz
    assert len(fork.audio()) >= 2 * 6400 + 2 * 3200
    assert record.frames == [] and record.tts_bytes_sent >= 19200
    assert [s.kind for s in record.sent][:4] == ["mark", "clear", "mark", "clear"]


# --- strict validation over the wire ----------------------------------------------------------------


async def test_violations_are_recorded_and_the_call_goes_on():
    async with ConnectorServer("sink") as server:
        fork = await Fork.open(server.url())
        await fork.ws.send(SILENCE)  # audio before start
        await fork.send_json(start_msg("u-bad"))
        await fork.ws.send(bytes(641))
        await fork.send_json({"type": "volume", "gain": 3})
        await fork.ws.send("not json")
        await fork.send_json({"type": "mark", "name": "never-sent", "status": "played"})
        await fork.ws.send(SILENCE)
        await fork.stop()
        record = await server.wait_call("u-bad")
        await record.wait_stopped()
    assert record.violations == [
        "binary frame 0: audio before start",
        "binary frame 1: 641 bytes, expected 640",
        "text message 1 (volume): unknown type",
        "text message 2: malformed JSON (Expecting value: line 1 column 1 (char 0))",
        "text message 3 (mark) 'never-sent': reported but not pending (never sent, or reported already)",
    ]
    assert record.bad_frames == 1 and record.frame_count == 3
    assert record.stop_reason == "hangup" and record.close_code == 1000


async def test_a_drop_without_stop_is_recorded_but_not_a_violation():
    async with ConnectorServer("script", answer_delay_ms=0, speed=50) as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.wait_for(lambda: bool(fork.received))
        fork.ws.transport.abort()
        record = await server.wait_call(0)
        await record.wait_stopped()
    assert record.stop_reason is None and record.close_code == 1006
    assert record.violations == [] and record.error is None


async def test_non_1000_close_after_stop_is_a_violation():
    async with ConnectorServer("sink") as server:
        fork = await Fork.open(server.url())
        await fork.send_json(start_msg())
        await fork.send_json({"type": "stop", "reason": "shutdown"})
        await fork.ws.close(1001)
        record = await server.wait_call(0)
        await record.wait_stopped()
    assert record.violations == ["closed with code 1001 after stop, expected 1000"]


# --- handshake ---------------------------------------------------------------------------------------


async def test_bearer_token_is_required_when_set():
    async with ConnectorServer("sink", token="s3cret") as server:
        for token in (None, "wrong"):
            with pytest.raises(InvalidStatus) as info:
                await Fork.open(server.url(), token=token)
            assert info.value.response.status_code == 401
            assert info.value.response.headers["WWW-Authenticate"].startswith("Bearer")
        assert server.rejected == 2 and server.connections == []
        fork = await Fork.open(server.url(), token="s3cret")
        await fork.send_json(start_msg())
        await fork.stop()
        record = await server.wait_call(0)
    assert record.headers["Authorization"] == "<redacted>"


async def test_subprotocol_is_selected_when_offered_and_optional():
    async with ConnectorServer("sink") as server:
        offered = await Fork.open(server.url(), subprotocols=["voicefork.v1"])
        plain = await Fork.open(server.url(), subprotocols=[])
        assert offered.ws.subprotocol == "voicefork.v1" and plain.ws.subprotocol is None
        for f in (offered, plain):
            await f.send_json(start_msg(f"u{id(f)}"))
            await f.stop()
    async with ConnectorServer("sink", subprotocol=None) as server:
        fork = await Fork.open(server.url(), subprotocols=["voicefork.v1"])
        assert fork.ws.subprotocol is None
        await fork.ws.close()


# --- concurrency ---------------------------------------------------------------------------------------


async def test_twenty_concurrent_calls_are_kept_apart():
    bot = speech.load_wav(speech.BOT_ANSWER, 24000)
    async with ConnectorServer("script", answer_delay_ms=50, speed=10, hangup_after_playback=True) as server:

        async def one_call(i: int) -> Fork:
            fork = await Fork.open(server.url(f"/calls/r{i}"))
            await fork.send_json(start_msg(f"u-{i}"))
            await fork.send_pcm(bytes(FRAME * 25))
            await fork.wait_text("hangup", timeout=10)
            await fork.stop("connector_hangup")
            return fork

        forks = await asyncio.gather(*(one_call(i) for i in range(20)))
        records = [await (await server.wait_call(f"u-{i}")).wait_stopped() for i in range(20)]

    assert len(server.connections) == 20
    for i, (fork, record) in enumerate(zip(forks, records)):
        assert fork.audio() == bot
        assert record.path == f"/calls/r{i}" and record.uuid == f"u-{i}"
        assert record.frame_count == 25 and record.violations == [] and record.error is None
        assert record.stop_reason == "connector_hangup" and record.close_code == 1000
        assert record.mark_status("end") == "played"


# --- CLI -----------------------------------------------------------------------------------------------


async def test_cli_serves_and_logs_a_line_per_call_start_and_stop():
    env = dict(os.environ, CONNECTOR_TOKEN="tok")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "testbed.connector", "--mode", "echo", "--port", "0", "--token-env", "CONNECTOR_TOKEN",
        cwd=ROOT, env=env, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
            assert line, "connector exited early"
            if "listening on ws://" in line and line.startswith("connector"):
                url = line.split("listening on ")[1].strip()
        fork = await Fork.open(url, token="tok")
        await fork.send_json(start_msg("u-cli"))
        await fork.send_pcm(bargein() + bytes(16000))
        await fork.wait_text("mark", "echo-1")
        await fork.stop()
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), 10)).decode()
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "[u-cli] call started: route=support" in rest
    assert "[u-cli] call stopped: reason=hangup close=1000" in rest
