"""SIGTERM on the real ``voicefork-server`` process: it stops accepting, lets live calls go on
until they end or the drain timeout passes, then ends the rest cleanly and exits 0."""

import asyncio
import base64
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytest.importorskip("ESL")

from mini_esl import MiniEsl  # noqa: E402
from testbed.connector.server import ConnectorServer  # noqa: E402
from testbed.figures import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
U = "7c1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:fork-secret").decode()}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, esl_port, fork_port, connector_url, spool, drain):
    path.write_text(
        f"""
freeswitch:
  esl_port: {esl_port}
  esl_password_env: T_ESL_PW
fork_server:
  public_url: ws://127.0.0.1:{fork_port}
  listen_port: {fork_port}
  auth: {{username: freeswitch, password_env: T_FORK_PW}}
  drain_timeout: {drain}
connectors:
  bot: {{url: "{connector_url}"}}
routes:
  - {{name: support, number: "+15551234567", connector: bot, rate: 16k}}
playback:
  spool_dir: {spool}
  freeswitch_spool_dir: {spool}
"""
    )


@pytest.fixture
async def server(tmp_path):
    esl = MiniEsl("pw")
    await esl.start()
    esl.on_api = lambda cmd: (
        "Caller-Caller-ID-Number: %2B15550001111\nvariable_write_rate: 8000\n" if cmd.startswith("uuid_dump") else None
    )
    bot = ConnectorServer("sink")
    await bot.start()
    procs = []

    async def start(drain):
        port = free_port()
        cfg = tmp_path / "voicefork.yaml"
        write_config(cfg, esl.port, port, bot.url("/bot"), tmp_path / "spool", drain)
        env = {**os.environ, "T_ESL_PW": "pw", "T_FORK_PW": "fork-secret"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fork_server", "--config", str(cfg), cwd=ROOT, env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        for _ in range(200):
            try:
                async with connect(f"ws://127.0.0.1:{port}/healthz"):
                    pass
            except InvalidStatus:
                break  # a plain HTTP answer: it is up
            except OSError:
                await asyncio.sleep(0.05)
        return proc, port

    start.esl = esl
    yield start, bot
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()
    await bot.close()
    await esl.close()


async def open_call(port):
    fork = await connect(f"ws://127.0.0.1:{port}/calls/support", subprotocols=["audio.drachtio.org"],
                         additional_headers=AUTH, compression=None)
    await fork.send(json.dumps({"route": "support", "uuid": U}, separators=(",", ":")))
    return fork


async def send_audio(fork, frames):
    for _ in range(frames):
        await fork.send(bytes(640))
        await asyncio.sleep(0.02)


async def test_sigterm_lets_a_live_call_finish_then_exits_0(server):
    start, bot = server
    proc, port = await start("30s")
    fork = await open_call(port)
    await send_audio(fork, 5)
    record = await bot.wait_call(U, timeout=5)
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    with pytest.raises((InvalidStatus, OSError)):  # no new calls while draining
        async with connect(f"ws://127.0.0.1:{port}/calls/support", additional_headers=AUTH):
            pass
    before = record.frame_count
    await send_audio(fork, 25)  # the live call still flows
    await record.wait_until(lambda r: r.frame_count >= before + 20, timeout=5)
    assert proc.returncode is None
    await fork.close()  # the caller hangs up
    await record.wait_stopped(timeout=5)
    assert record.stop_reason == "hangup"
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    err = (await proc.stderr.read()).decode()
    assert "draining: 1 live calls" in err


async def test_sigterm_ends_calls_left_at_the_drain_timeout(server):
    start, bot = server
    proc, port = await start("1s")
    fork = await open_call(port)
    await send_audio(fork, 5)
    record = await bot.wait_call(U, timeout=5)
    proc.send_signal(signal.SIGTERM)
    feeder = asyncio.create_task(send_audio(fork, 400))
    await record.wait_stopped(timeout=6)
    assert record.stop_reason == "shutdown"
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    feeder.cancel()
    await asyncio.gather(feeder, return_exceptions=True)
    await fork.close()


async def test_sigterm_with_50_live_calls_cuts_none_before_the_drain_timeout(server):
    # 50 live calls, SIGTERM, drain_timeout 3 s. Half the callers hang up 1 s later: those end
    # as hangups. No call is cut before the timeout: the other 25 keep streaming until it, and
    # are then ended with "shutdown" (their route fallback: uuid_kill, which this test's switch
    # answers by closing the fork, as FreeSWITCH would). The process then exits 0.
    import uuid as uuidlib

    start, bot = server
    loop = asyncio.get_running_loop()
    forks: dict[str, object] = {}

    def api(cmd):
        if cmd.startswith("uuid_dump"):
            return "Caller-Caller-ID-Number: %2B15550001111\nvariable_write_rate: 8000\n"
        if cmd.startswith("uuid_kill "):
            fork = forks.get(cmd.split()[1])
            if fork is not None:
                loop.create_task(fork.close())
        return None

    start.esl.on_api = api
    proc, port = await start("3s")
    errlog = bytearray()

    async def drain_stderr():  # 50 calls log a lot: an unread pipe would block the server
        while chunk := await proc.stderr.read(65536):
            errlog.extend(chunk)

    reader = asyncio.create_task(drain_stderr())
    uuids = [str(uuidlib.uuid4()) for _ in range(50)]
    for u in uuids:
        fork = await connect(f"ws://127.0.0.1:{port}/calls/support", subprotocols=["audio.drachtio.org"],
                             additional_headers=AUTH, compression=None)
        await fork.send(json.dumps({"route": "support", "uuid": u}, separators=(",", ":")))
        forks[u] = fork

    async def feed():  # every live fork sends 20 ms of audio every 20 ms
        while True:
            for fork in list(forks.values()):
                try:
                    await fork.send(bytes(640))
                except Exception:  # noqa: BLE001 - a closed fork just stops
                    pass
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(feed())
    records = [await bot.wait_call(u, timeout=10) for u in uuids]
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    t_term = loop.time()
    await asyncio.sleep(0.3)
    refused = False
    try:
        async with connect(f"ws://127.0.0.1:{port}/calls/support", additional_headers=AUTH):
            pass
    except (InvalidStatus, OSError):
        refused = True
    await asyncio.sleep(max(0.0, t_term + 1.0 - loop.time()))
    leaving, staying = uuids[:25], uuids[25:]
    for u in leaving:
        await forks.pop(u).close()
    counts = [r.frame_count for r in records[25:]]
    await asyncio.sleep(max(0.0, t_term + 2.8 - loop.time()))
    flowing = sum(1 for r, c in zip(records[25:], counts) if r.frame_count >= c + 60 and not r.closed)
    code = await asyncio.wait_for(proc.wait(), 15)
    t_exit = loop.time()
    feeder.cancel()
    await asyncio.gather(feeder, return_exceptions=True)
    await reader
    for r in records:
        await r.wait_stopped(timeout=5)
    by_caller = sum(1 for r in records[:25] if r.stop_reason == "hangup")
    at_timeout = sum(1 for r in records[25:] if r.stop_reason == "shutdown" and r.stop_at - t_term >= 2.9)
    early = [round(r.stop_at - t_term, 2) for r in records[25:] if r.stop_at - t_term < 2.9]
    record("SIGTERM with 50 live calls (drain 3 s)", 50, by_caller + at_timeout,
           hung_up_by_caller=by_caller, ended_at_timeout=at_timeout, cut_early=len(early),
           exit_after_s=round(t_exit - t_term, 2), exit_code=code)
    for fork in forks.values():
        await fork.close()
    assert refused and code == 0
    assert flowing == 25 and by_caller == 25 and at_timeout == 25, early
    assert "draining: 50 live calls" in errlog.decode()
