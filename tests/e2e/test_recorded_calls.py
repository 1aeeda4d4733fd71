"""Recording on the emulated switch: the rendered record_session writes a stereo WAV (the caller
left, what the caller heard right), the fork server writes its sidecar and tells the connector
the path in `stop`; retention deletes old files."""

import asyncio
import json
import os
import time
import wave

import numpy as np
import pytest

pytest.importorskip("ESL")

from testbed.audio_compare import best_aligned_snr  # noqa: E402
from testbed.speech import BOT_ANSWER, CALLER_QUESTION, load_wav  # noqa: E402
from testbed.stack import Stack  # noqa: E402

SUPPORT, SALES = "+15551234567", "+15557654321"  # config/voicefork.yaml: sales records, support does not


async def until(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def read_stereo(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(np.float64)
    return rate, pcm[:, 0], pcm[:, 1]


async def test_a_recorded_call_has_the_caller_left_and_what_they_heard_right():
    opts = {"bargein": False, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100, "mark_every_ms": 0}
    async with Stack(connector_options=opts) as s:
        ch = s.switch.place_call(SALES, "+15550001111", "Eve ${caller}")
        record = await s.connector.wait_call(0, timeout=5)
        said = load_wav(CALLER_QUESTION, ch.rate)
        ch.say(said)
        await record.wait_mark("end", timeout=20)
        await until(lambda: ch.mouth.frame(()) is None, what="the caller to finish")
        await asyncio.sleep(0.2)
        ch.hangup()
        await record.wait_stopped(timeout=5)
        await until(lambda: not s.app.calls, what="the call to end")

        (path,) = ch.recordings
        day = time.strftime("%Y-%m-%d")
        assert path == f"{s.workdir}/recordings/{day}/sales-{ch.uuid}.wav"
        assert record.stop_recording == path  # the connector is told where it is
        rate, left, right = read_stereo(path)
        assert rate == 8000
        caller = np.frombuffer(said, "<i2").astype(np.float64)
        bot = np.frombuffer(load_wav(BOT_ANSWER, 8000), "<i2").astype(np.float64)
        snr_left = best_aligned_snr(caller, left, in_band=True, rate=8000)
        snr_right = best_aligned_snr(bot, right, in_band=True, rate=8000)
        print(f"emulated recording: left vs caller {snr_left:.1f} dB, right vs bot {snr_right:.1f} dB")
        assert snr_left >= 60 and snr_right >= 60, (snr_left, snr_right)
        # Each side holds only its own party: the bot is not on the left, the caller not on the right.
        assert best_aligned_snr(bot, left, in_band=True, rate=8000) < 3
        assert best_aligned_snr(caller, right, in_band=True, rate=8000) < 3
        # From record_session (right after answer) to the hangup: the whole call on the channel clock.
        assert 0 <= ch.tick * 160 - len(left) <= 3 * 160, (ch.tick, len(left))

        sidecar = json.loads((s.workdir / "recordings" / day / f"sales-{ch.uuid}.json").read_text())
        assert {k: sidecar[k] for k in ("uuid", "route", "from", "to", "outcome", "recording")} == {
            "uuid": ch.uuid, "route": "sales", "from": "+15550001111", "to": SALES, "outcome": "completed",
            "recording": path}
        assert sidecar["marks"] == {"played": 1, "cleared": 0}
        assert sidecar["start"] < sidecar["end"] and 0 < sidecar["duration_s"] < 60
        assert "Eve" not in json.dumps(sidecar)  # the caller's name is not kept


async def test_a_route_without_recording_records_nothing_and_stop_has_no_path():
    async with Stack(connector_options={"answer_delay_ms": 60_000}) as s:
        ch = s.switch.place_call(SUPPORT)
        record = await s.connector.wait_call(0, timeout=5)
        await asyncio.sleep(0.3)
        ch.hangup()
        await record.wait_stopped(timeout=5)
        assert ch.recordings == [] and record.stop_recording is None
        assert not (s.workdir / "recordings").exists()


async def test_retention_deletes_recordings_older_than_the_configured_days(tmp_path):
    from fs_dialplan.model import RecordingSettings
    from fork_server.recording import RecordingStore

    store = RecordingStore(RecordingSettings(dir="/fs/rec", fork_server_dir=str(tmp_path), retention_days=2))
    old_dir, new_dir = tmp_path / "2026-01-01", tmp_path / "2026-12-07"
    old_dir.mkdir()
    new_dir.mkdir()
    now = time.time()
    files = {old_dir / "a-u1.wav": 3, old_dir / "a-u1.json": 3, new_dir / "a-u2.wav": 1, new_dir / "a-u2.json": 1,
             old_dir / "notes.txt": 10}
    for p, days in files.items():
        p.write_bytes(b"x")
        os.utime(p, (now - days * 86400, now - days * 86400))
    deleted = store.sweep(now)
    assert sorted(deleted) == sorted(str(p) for p in (old_dir / "a-u1.wav", old_dir / "a-u1.json"))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a-u2.json", "a-u2.wav", "notes.txt"]
    assert RecordingStore(RecordingSettings(dir="/x", fork_server_dir=str(tmp_path))).sweep(now + 1e9) == []  # 0: keep
    # Only plain .wav paths under recording.dir are taken from the switch.
    assert store.accept("/fs/rec/2026-12-07/a-u.wav") == "/fs/rec/2026-12-07/a-u.wav"
    for bad in ("/etc/passwd.wav", "/fs/rec/../x.wav", "/fs/rec/a.json", "/fs/rec/a b.wav", "/fs/recx/a.wav", None):
        assert store.accept(bad) is None, bad
