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
