"""``voicefork-server --workers 2``: two processes on one port (SO_REUSEPORT), a call lives in
one worker, one worker only runs the fallback of a fork that reached none, SIGTERM drains both."""

import asyncio
import json
import os
import signal
import sys
import uuid as uuidlib

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytest.importorskip("ESL")

from mini_esl import MiniEsl  # noqa: E402
from test_sigterm_drain import AUTH, ROOT, free_port, write_config  # noqa: E402
from testbed.connector.server import ConnectorServer  # noqa: E402


async def until(pred, timeout, what):
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_workers_share_the_port_split_the_calls_and_drain_on_sigterm(tmp_path):
    esl = MiniEsl("pw")
    await esl.start()
    esl.on_api = lambda cmd: "Caller-Caller-ID-Number: %2B15550001111\nvariable_write_rate: 8000\n" if cmd.startswith("uuid_dump") else None
    bot = ConnectorServer("sink", store_audio=True)
    await bot.start()
    port = free_port()
    cfg = tmp_path / "voicefork.yaml"
    write_config(cfg, esl.port, port, bot.url("/bot"), tmp_path / "spool", "5s")
    env = {**os.environ, "T_ESL_PW": "pw", "T_FORK_PW": "fork-secret"}
    log_path = tmp_path / "server.log"
    log_file = open(log_path, "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fork_server", "--config", str(cfg), "--workers", "2", cwd=ROOT, env=env,
        stderr=log_file, start_new_session=True,
    )
    log_file.close()
    try:
        await until(lambda: len(esl.event_writers) == 2, 15, "both workers' ESL event connections")
        for _ in range(200):
            try:
                async with connect(f"ws://127.0.0.1:{port}/healthz"):
                    pass
            except InvalidStatus:
                break
            except OSError:
                await asyncio.sleep(0.05)
        uuids = [str(uuidlib.uuid4()) for _ in range(12)]
        forks = []
        for u in uuids:
            fork = await connect(f"ws://127.0.0.1:{port}/calls/support", subprotocols=["audio.drachtio.org"],
                                 additional_headers=AUTH, compression=None)
            await fork.send(json.dumps({"route": "support", "uuid": u}, separators=(",", ":")))
            forks.append(fork)
        for i in range(25):
            for j, fork in enumerate(forks):
                await fork.send(bytes([j]) * 640)
            await asyncio.sleep(0.02)
        records = [await bot.wait_call(u, timeout=5) for u in uuids]
        await until(lambda: all(len(r.audio()) >= 20 * 640 for r in records), 5, "caller audio at the connector")
        for j, r in enumerate(records):
            assert set(r.audio()) == {j}  # each call's own frames, unmixed

        # A fork that reached no worker: exactly one worker runs its route fallback.
        orphan = str(uuidlib.uuid4())
        esl.emit({"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_fork::connect_failed", "Unique-ID": orphan,
                  "variable_voicefork_route": "support"})
        await until(lambda: any(f"uuid_kill {orphan}" in c for c in esl.commands), 5, "the orphan's fallback")
        await asyncio.sleep(0.5)
        assert sum(f"uuid_kill {orphan}" in c for c in esl.commands) == 1

        for fork in forks:
            await fork.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        log = log_path.read_text()
        opened = [line for line in log.splitlines() if "< fork open" in line]
        assert len(opened) == 12
        assert {line.split()[3] for line in opened} == {"w0", "w1"}, "SO_REUSEPORT spread 12 calls over both workers"
        assert log.count("draining:") == 2
    finally:
        if proc.returncode is None:  # a failed test: the workers go with their parent (its group)
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await bot.close()
        await esl.close()


async def _scrape(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
        body = (await reader.readexactly(length)).decode()
    finally:
        writer.close()
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(body) for s in f.samples}


async def test_one_scrape_of_two_workers_shows_the_whole_server(tmp_path):
    esl = MiniEsl("pw")
    await esl.start()
    esl.on_api = lambda cmd: "Caller-Caller-ID-Number: %2B15550001111\nvariable_write_rate: 8000\n" if cmd.startswith("uuid_dump") else None
    bot = ConnectorServer("sink", store_audio=True)
    await bot.start()
    port = free_port()
    cfg = tmp_path / "voicefork.yaml"
    write_config(cfg, esl.port, port, bot.url("/bot"), tmp_path / "spool", "5s")
    env = {**os.environ, "T_ESL_PW": "pw", "T_FORK_PW": "fork-secret"}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fork_server", "--config", str(cfg), "--workers", "2", cwd=ROOT, env=env, stderr=log_file,
            start_new_session=True)
    try:
        await until(lambda: len(esl.event_writers) == 2, 15, "both workers' ESL event connections")
        uuids = [str(uuidlib.uuid4()) for _ in range(12)]
        forks = []
        for u in uuids:
            fork = await connect(f"ws://127.0.0.1:{port}/calls/support", subprotocols=["audio.drachtio.org"],
                                 additional_headers=AUTH, compression=None)
            await fork.send(json.dumps({"route": "support", "uuid": u}, separators=(",", ":")))
            forks.append(fork)
        for _ in range(25):
            for fork in forks:
                await fork.send(bytes(640))
            await asyncio.sleep(0.02)
        records = [await bot.wait_call(u, timeout=5) for u in uuids]
        await until(lambda: all(len(r.audio()) >= 25 * 640 for r in records), 5, "caller audio at the connector")
        await asyncio.sleep(1.5)  # each worker shares its metrics once a second
        scrapes = [await _scrape(port) for _ in range(8)]
        for m in scrapes:  # whichever worker answers, it counts both workers' calls
            assert m[("voicefork_caller_frames_total", ())] == 12 * 25
            assert m[("voicefork_active_calls", ())] == 12
            assert m[("voicefork_esl_up", (("switch", "default"),))] == 1
        for fork in forks:
            await fork.close()
        await asyncio.sleep(2.0)
        m = await _scrape(port)
        ended = sum(v for (name, _), v in m.items() if name == "voicefork_calls_total")
        assert ended == 12 and m[("voicefork_active_calls", ())] == 0, m
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        opened = [line for line in log_path.read_text().splitlines() if "< fork open" in line]
        per_worker = {w: sum(line.split()[3] == w for line in opened) for w in ("w0", "w1")}
        print(f"--workers 2: calls per worker {per_worker}; every scrape: 300 caller frames, 12 active calls")
        assert all(per_worker.values()), per_worker  # so one worker alone would have counted fewer
    finally:
        if proc.returncode is None:  # a failed test: the workers go with their parent (its group)
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await bot.close()
        await esl.close()


def test_merge_adds_counters_and_histograms_and_takes_the_least_esl_up():
    from fork_server.metrics import Metrics, merge
    from prometheus_client.parser import text_string_to_metric_families

    a, b = Metrics(), Metrics()
    a.frames_in.inc(5), b.frames_in.inc(7)
    a.calls.labels("completed").inc(2), b.calls.labels("completed").inc(1), b.calls.labels("fallback").inc(1)
    a.relay_latency.observe(0.001), b.relay_latency.observe(0.3)
    a.esl_up.labels("default").set(1), b.esl_up.labels("default").set(0)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(merge([a.render(), b.render()]).decode()) for s in f.samples}
    assert got[("voicefork_caller_frames_total", ())] == 12
    assert got[("voicefork_calls_total", (("outcome", "completed"),))] == 3
    assert got[("voicefork_calls_total", (("outcome", "fallback"),))] == 1
    assert got[("voicefork_relay_seconds_count", ())] == 2 and got[("voicefork_relay_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("voicefork_esl_up", (("switch", "default"),))] == 0  # one worker's link is down
    assert not [k for k in got if k[0].endswith("_created")]
