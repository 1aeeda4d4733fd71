"""A loopback cluster (issue 17): N real FreeSWITCH x M fork servers behind HAProxy.

Everything runs as an operator would run it: one YAML (written here with loopback ports) names
the switches and the fork servers; ``fs_dialplan.render`` gives one conf tree per switch and the
``haproxy.cfg`` fragment; each switch is ``FREESWITCH_BIN`` on its own tree
(:class:`testbed.real_switch.RealSwitch`); each fork server is ``python -m fork_server`` (the
operator's command) on the same YAML and its own port; HAProxy (Debian's) runs the rendered
fragment. The voice connector and the SIP callers live in this process.

``python -m testbed.cluster`` (``just cluster``) runs the scenario of tests/freeswitch/test_cluster.py
once more and prints its figures: calls per switch and per fork server, fork-server CPU per
call-second, calls lost over a rolling restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fs_dialplan import load_config
from fs_dialplan.render import HAPROXY_FILE, render, switch_tree

from .connector.server import ConnectorServer
from .real_switch import RealSwitch, free_port
from .sip_caller import SipCaller

__all__ = ["Cluster", "ForkServerProc", "cluster_yaml"]

ROUTE_NUMBER = "+15551234567"
_ENV = {"VOICEFORK_ESL_PASSWORD": "cluster-esl-secret", "VOICEFORK_FORK_PASSWORD": "cluster-fork-secret"}


def cluster_yaml(switches: list[tuple[str, int]], fork_ports: list[int], haproxy_port: int, connector_url: str,
                 spool: str, fs_temp: str, drain_timeout_s: float, drain_grace_s: float, check_interval_s: float) -> str:
    """The cluster's config, as an operator would write it (loopback addresses)."""
    sw = "".join(f"    - name: {name}\n      esl_host: 127.0.0.1\n      esl_port: {port}\n" for name, port in switches)
    servers = ", ".join(f"127.0.0.1:{p}" for p in fork_ports)
    return f"""\
freeswitch:
  esl_password_env: VOICEFORK_ESL_PASSWORD
  temp_dir: {fs_temp}
  switches:
{sw}fork_server:
  public_url: ws://127.0.0.1:{haproxy_port}
  listen_host: 127.0.0.1
  auth:
    username: freeswitch
    password_env: VOICEFORK_FORK_PASSWORD
  drain_timeout: {drain_timeout_s}s
  drain_grace: {drain_grace_s}s
  haproxy:
    bind: 127.0.0.1:{haproxy_port}
    servers: [{servers}]
    check_interval: {check_interval_s}s
connectors:
  bot:
    url: {connector_url}
    connect_timeout: 2s
routes:
  - name: support
    number: "{ROUTE_NUMBER}"
    connector: bot
    rate: 8k
    fallback:
      action: hangup
playback:
  spool_dir: {spool}
  freeswitch_spool_dir: {spool}
"""


class ForkServerProc:
    """``python -m fork_server`` on the cluster's YAML and its own port."""

    def __init__(self, config_path: Path, port: int, env: dict[str, str], log_path: Path) -> None:
        self.config_path, self.port, self.env, self.log_path = config_path, port, env, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.cpu_s_before = 0.0  # CPU of earlier incarnations (restarts)

    async def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept by the child
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fork_server", "--config", str(self.config_path), "--port", str(self.port),
            "--log-level", "INFO", env={**os.environ, **self.env}, stdout=log, stderr=log,
        )
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.returncode is not None:
                raise RuntimeError(f"fork server on {self.port} exited with {self.proc.returncode}; see {self.log_path}")
            if await asyncio.to_thread(http_get, self.port, "/healthz") == 200:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"fork server on {self.port} not healthy within {timeout} s; see {self.log_path}")

    def cpu_s(self) -> float:
        """CPU seconds of this process (user + system), over its incarnations so far."""
        now = 0.0
        if self.proc is not None and self.proc.returncode is None:
            try:
                fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                now = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                now = 0.0
        return self.cpu_s_before + now

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal it and wait for its exit (SIGTERM: it drains first). Returns the exit code."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.cpu_s_before = self.cpu_s()
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


def http_get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@dataclass
class Cluster:
    """``async with Cluster(binary) as c:`` then ``await c.callers[i].place_call(ROUTE_NUMBER)``."""

    binary: str
    n_switches: int = 2
    n_fork_servers: int = 2
    drain_timeout_s: float = 20.0
    drain_grace_s: float = 1.0
    check_interval_s: float = 0.2
    connector_options: dict[str, Any] = field(default_factory=dict)
    switches: list[RealSwitch] = field(default_factory=list)
    fork_servers: list[ForkServerProc] = field(default_factory=list)
    callers: list[SipCaller] = field(default_factory=list)

    async def __aenter__(self) -> "Cluster":
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        if shutil.which("haproxy") is None:
            raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy)")
        self._tmp = tempfile.TemporaryDirectory(prefix="voicefork-cluster-")
        self.workdir = Path(self._tmp.name)
        spool, temp = self.workdir / "spool", self.workdir / "fs-temp"
        spool.mkdir()
        temp.mkdir()
        self.connector = ConnectorServer("script", **self.connector_options)
        await self.connector.start()
        names = [f"fs-{chr(ord('a') + i)}" for i in range(self.n_switches)]
        esl_ports = [free_port() for _ in names]
        sip_ports = [free_port() for _ in names]
        fork_ports = [free_port() for _ in range(self.n_fork_servers)]
        self.haproxy_port = free_port()
        self.config_path = self.workdir / "voicefork.yaml"
        self.config_path.write_text(cluster_yaml(
            list(zip(names, esl_ports)), fork_ports, self.haproxy_port, self.connector.url("/bot"), str(spool), str(temp),
            self.drain_timeout_s, self.drain_grace_s, self.check_interval_s))
        self.config = load_config(str(self.config_path))
        files = render(self.config, _ENV)
        cfg = self.workdir / "haproxy.cfg"
        # The rendered fragment, with the global and defaults sections an operator's file has.
        self.stats_socket = self.workdir / "haproxy.sock"
        cfg.write_text(f"global\n    maxconn 4096\n    stats socket {self.stats_socket} level operator\n"
                       "    log stderr format raw local0 info\n"
                       "defaults\n    timeout connect 2s\n    log global\n    option httplog\n\n" + files[HAPROXY_FILE])
        self.haproxy = await asyncio.create_subprocess_exec(
            "haproxy", "-db", "-f", str(cfg), stdout=asyncio.subprocess.DEVNULL,
            stderr=open(self.workdir / "haproxy.log", "wb"))  # noqa: SIM115
        for i, (name, esl_port, sip_port) in enumerate(zip(names, esl_ports, sip_ports)):
            sw = RealSwitch(self.binary, switch_tree(files, name), self.workdir / name, sip_port=sip_port,
                            esl_port=esl_port, esl_password=_ENV["VOICEFORK_ESL_PASSWORD"], log_level="warning")
            (self.workdir / name).mkdir()
            self.switches.append(sw)
            await sw.start()
            caller = SipCaller(sip_port=sip_port)
            await caller.start()
            self.callers.append(caller)
        for i, port in enumerate(fork_ports):
            fs = ForkServerProc(self.config_path, port, dict(_ENV), self.workdir / f"fork-{i}.log")
            self.fork_servers.append(fs)
            await fs.start()
        await self.wait_balanced_up()

    async def backends(self) -> dict[str, str]:
        """HAProxy's view of each fork server: ``{"fork1": "UP", "fork2": "DOWN", ...}`` (``show stat``)."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.stats_socket))
        except OSError:
            return {}
        try:
            writer.write(b"show stat\n")
            text = (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
        finally:
            writer.close()
        out = {}
        for line in text.splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "voicefork_fork_servers" and cols[1].startswith("fork"):
                out[cols[1]] = cols[17].split()[0]
        return out

    async def wait_balanced_up(self, n: int | None = None, timeout: float = 15.0) -> None:
        """Until HAProxy counts ``n`` fork servers (default: all) as UP."""
        want = len(self.fork_servers) if n is None else n
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(1 for status in (await self.backends()).values() if status == "UP") >= want:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"HAProxy does not count {want} fork servers up: {await self.backends()}")

    def fork_server_of(self, uuid: str) -> int | None:
        """Which fork server's log names the call (its 'fork open' line)."""
        for i, fs in enumerate(self.fork_servers):
            try:
                if f"[{uuid}] < fork open" in fs.log_path.read_text(errors="replace"):
                    return i
            except OSError:
                pass
        return None

    def logs(self, lines: int = 60) -> str:
        """The end of each fork server's and HAProxy's log (for a failing test to print)."""
        out = []
        for path in [fs.log_path for fs in self.fork_servers] + [self.workdir / "haproxy.log"]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log)"]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    async def __aexit__(self, *exc: object) -> None:
        for caller in self.callers:
            await caller.close()
        for fs in self.fork_servers:
            await fs.stop(timeout=10)
        for sw in self.switches:
            await sw.close()
        if getattr(self, "haproxy", None) is not None and self.haproxy.returncode is None:
            self.haproxy.terminate()
            await self.haproxy.wait()
        if getattr(self, "connector", None) is not None:
            await self.connector.close()
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()


def _proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def _measure(binary: str, calls: int, window: float) -> None:
    """``calls`` calls spread over the switches, each bot talking its whole answer every call
    (marks each second); fork-server and switch CPU over ``window`` seconds once all are up."""
    async with Cluster(binary, connector_options={"bargein": False, "speed": 1.0, "answer_delay_ms": 100,
                                                  "mark_every_ms": 1000}) as c:
        print(f"cluster: {len(c.switches)} switches, {len(c.fork_servers)} fork servers behind HAProxy on "
              f"127.0.0.1:{c.haproxy_port}; {calls} calls, {window:.0f} s window", flush=True)
        live = [await c.callers[i % len(c.callers)].place_call(ROUTE_NUMBER, f"+1555200{i:04d}") for i in range(calls)]
        await asyncio.sleep(1)
        fs0 = [fs.cpu_s() for fs in c.fork_servers]
        sw0 = [_proc_cpu_s(sw.pid) for sw in c.switches]
        await asyncio.sleep(window)
        fs1 = [fs.cpu_s() for fs in c.fork_servers]
        sw1 = [_proc_cpu_s(sw.pid) for sw in c.switches]
        per_server = [0] * len(c.fork_servers)
        for r in c.connector.connections:
            owner = c.fork_server_of(r.uuid) if r.uuid is not None else None
            if owner is not None:
                per_server[owner] += 1
        for i, (a, b) in enumerate(zip(fs0, fs1)):
            print(f"  fork server {i}: {per_server[i]} calls, {100 * (b - a) / window:.1f} % of a core, "
                  f"{1000 * (b - a) / max(per_server[i] * window, 1e-9):.1f} ms CPU per call-second")
        for i, (a, b) in enumerate(zip(sw0, sw1)):
            n = len(live[i :: len(c.switches)])
            print(f"  switch fs-{chr(ord('a') + i)}: {n} calls, {100 * (b - a) / window:.1f} % of a core, "
                  f"{1000 * (b - a) / max(n * window, 1e-9):.1f} ms CPU per call-second")
        print(f"  {sum(1 for call in live if not call.hungup.is_set())}/{calls} calls up at the end; every caller heard "
              f"the bot: {all(len(call.ear.packets) >= 50 for call in live)}")
        for call in live:
            call.hangup()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.cluster", description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--window", type=float, default=15.0)
    args = ap.parse_args(argv)
    binary = os.environ.get("FREESWITCH_BIN")
    if not binary:
        print("cluster: FREESWITCH_BIN is not set: run `just freeswitch`, which prints it", file=sys.stderr)
        return 2
    asyncio.run(_measure(binary, args.calls, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
