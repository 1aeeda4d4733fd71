"""A REAL FreeSWITCH for the gated tests (``FREESWITCH_BIN``), run from the RENDERED config.

Nothing here builds FreeSWITCH: it starts the binary ``FREESWITCH_BIN`` names (with
mod_sofia, mod_event_socket, mod_commands, mod_dptools, mod_dialplan_xml, mod_sndfile,
mod_native_file, mod_tone_stream and the drachtio mod_audio_fork in its module dir) on a
throwaway conf tree written here. The tree is minimal, loopback only: an unauthenticated SIP
profile into context ``public``, and voicefork's rendered ``event_socket.conf.xml``,
``acl.conf.xml``, ``dialplan/public/50_voicefork.xml``, the outbound context
(``dialplan/voicefork_outbound.xml``, with an ``outbound:`` section) and trunk gateways
(``sip_profiles/external/*.xml``, in the profile's ``<gateways>``) dropped in unchanged, as
an operator would. :class:`RealStack` wires it to the real fork server and the reference
connector, like :class:`testbed.stack.Stack` does with the emulator.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import signal
import socket
import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Mapping

from fork_server.app import App
from fs_dialplan import load_config
from fs_dialplan.model import Config
from fs_dialplan.render import DIALPLAN_FILE, OUTBOUND_FILE, render

from .connector.server import ConnectorServer
from .sip_caller import SipCaller
from .stack import EXAMPLE_CONFIG, stack_env, wire

__all__ = ["RealSwitch", "RealStack", "free_port", "rtp_range"]

log = logging.getLogger("testbed.real_switch")

_MODULES = (
    "mod_console", "mod_logfile", "mod_event_socket", "mod_sofia", "mod_commands", "mod_dptools",
    "mod_dialplan_xml", "mod_sndfile", "mod_native_file", "mod_tone_stream", "mod_audio_fork",
    "mod_hash",  # the limit application's hash backend (routes with max_calls; in FreeSWITCH's stock modules.conf)
)


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(tries: int = 200) -> int:
    """A port for a server a test starts later (a switch's SIP or ESL port, a fork server's,
    HAProxy's), free for TCP and UDP alike, below the kernel's ephemeral range and below the RTP
    ranges (:func:`rtp_range`), never the same twice in one process.

    A port from ``bind(port 0)`` is an ephemeral one: between the pick and the switch's own bind,
    any outgoing connection on this box could take it, and sofia binds its SIP port for UDP and
    TCP both, so a UDP-free port could be TCP-taken. Either way the switch's profile or ESL never
    came up (CI, 2026-12-07: "SIP profile did not come up"; sofia logs "Error Creating SIP UA",
    mod_event_socket "Could not listen")."""
    high = min(_ephemeral_low(), 16384)
    for _ in range(tries):
        port = random.randrange(10000, high)
        if port in _handed_out:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found for a test server")


def _conf_tree(
    rendered: Mapping[str, str], sip_port: int, rtp_base: int, conf_dir: Path, log_level: str | None = None
) -> dict[str, str]:
    modules = "".join(f'    <load module="{m}"/>\n' for m in _MODULES)
    # switch.conf's loglevel caps what any logger gets (FreeSWITCH's default: debug).
    core_log = f'    <param name="loglevel" value="{log_level}"/>\n' if log_level else ""
    files = {
        "freeswitch.xml": """<?xml version="1.0"?>
<document type="freeswitch/xml">
  <section name="configuration" description="Various Configuration">
    <X-PRE-PROCESS cmd="include" data="autoload_configs/*.xml"/>
  </section>
  <section name="dialplan" description="Regex/XML Dialplan">
    <X-PRE-PROCESS cmd="include" data="dialplan/*.xml"/>
  </section>
</document>
""",
        "autoload_configs/modules.conf.xml": f'<configuration name="modules.conf" description="Modules">\n  <modules>\n{modules}  </modules>\n</configuration>\n',
        "autoload_configs/switch.conf.xml": f"""<configuration name="switch.conf" description="Core Configuration">
  <settings>
    <param name="max-sessions" value="500"/>
    <param name="sessions-per-second" value="100"/>
    <param name="rtp-start-port" value="{rtp_base}"/>
    <param name="rtp-end-port" value="{rtp_base + 999}"/>
    <param name="dump-cores" value="no"/>
{core_log}  </settings>
</configuration>
""",
        "autoload_configs/logfile.conf.xml": """<configuration name="logfile.conf" description="File Logging">
  <settings><param name="rotate-on-hup" value="true"/></settings>
  <profiles><profile name="default"><settings>
    <param name="rollover" value="104857600"/>
  </settings><mappings><map name="all" value="debug,info,notice,warning,err,crit,alert"/></mappings></profile></profiles>
</configuration>
""",
        "autoload_configs/console.conf.xml": '<configuration name="console.conf" description="Console Logger">\n  <mappings><map name="all" value="console,debug,info,notice,warning,err,crit,alert"/></mappings>\n  <settings><param name="colorize" value="false"/><param name="loglevel" value="warning"/></settings>\n</configuration>\n',
        "autoload_configs/sofia.conf.xml": f"""<configuration name="sofia.conf" description="sofia Endpoint">
  <global_settings><param name="log-level" value="0"/></global_settings>
  <profiles>
    <profile name="external">
      <domains><domain name="all" alias="false" parse="false"/></domains>
      <settings>
        <param name="sip-ip" value="127.0.0.1"/>
        <param name="rtp-ip" value="127.0.0.1"/>
        <param name="sip-port" value="{sip_port}"/>
        <param name="context" value="public"/>
        <param name="dialplan" value="XML"/>
        <param name="auth-calls" value="false"/>
        <param name="inbound-codec-prefs" value="PCMU"/>
        <param name="outbound-codec-prefs" value="PCMU"/>
        <param name="rfc2833-pt" value="101"/>
        <param name="dtmf-duration" value="2000"/>
        <param name="rtp-timer-name" value="soft"/>
        <param name="manage-presence" value="false"/>
        <param name="tls" value="false"/>
      </settings>
      <gateways>
        <X-PRE-PROCESS cmd="include" data="{conf_dir}/sip_profiles/external/*.xml"/>
      </gateways>
    </profile>
  </profiles>
</configuration>
""",
        "dialplan/public.xml": """<include>
  <context name="public">
    <X-PRE-PROCESS cmd="include" data="public/*.xml"/>
  </context>
</include>
""",
        # The transfer target of the example config's sales fallback, where uuid_transfer
        # sends it (XML default): it parks, so a test can find it.
        "dialplan/default.xml": """<include>
  <context name="default">
    <extension name="transfer_target_1000">
      <condition field="destination_number" expression="^1000$">
        <action application="answer"/>
        <action application="park"/>
      </condition>
    </extension>
  </context>
</include>
""",
    }
    for rel, text in rendered.items():  # unchanged, as an operator drops them in
        if rel.startswith("sip_profiles/") or rel in ("autoload_configs/event_socket.conf.xml", "autoload_configs/acl.conf.xml",
                                                      DIALPLAN_FILE, OUTBOUND_FILE):
            files[rel] = text
    files.setdefault("sip_profiles/external/.keep.xml", "<include/>\n")  # the include needs a match
    return files


def rtp_range(span: int = 1000, tries: int = 50) -> int:
    """A random first RTP port whose first ports nobody holds. FreeSWITCH binds its RTP sockets
    with SO_REUSEADDR (switch_rtp.c), so two switches given the same range (the tests' and a
    benchmark's, or two test runs) can bind the same UDP port and take each other's packets:
    a fixed per-pid range crossed the streams of concurrent runs. The switch takes ports from
    the bottom of its range, so the bottom ports are the ones to probe."""
    for _ in range(tries):
        base = random.randrange(16384, 60000 - span, 2)
        try:
            for port in range(base, base + 8, 2):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free RTP port range found")


def _log_errors(log_dir: Path, last: int = 4) -> str:
    """The switch's last distinct [ERR] lines, for an error message CI shows (its log is gone)."""
    try:
        lines = (log_dir / "freeswitch.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errs = list(dict.fromkeys(line.split("[ERR]", 1)[1].strip() for line in lines if "[ERR]" in line and "SQL ERR" not in line))
    return "; its errors: " + " | ".join(errs[-last:]) if errs else ""


class RealSwitch:
    """``FREESWITCH_BIN`` on a throwaway conf tree; ``start()`` returns once ESL answers."""

    def __init__(self, binary: str, rendered: Mapping[str, str], workdir: Path, *, sip_port: int, esl_port: int, esl_password: str,
                 rtp_base: int | None = None, log_level: str | None = None, fork_module: str = "drachtio") -> None:
        """``rtp_base``: first of the 1000 RTP ports (default: a random free-looking range, see
        :func:`rtp_range`); ``log_level``: switch.conf's ``loglevel`` (default: FreeSWITCH's own, debug);
        ``fork_module``: ``jambonz`` runs the module dir ``just freeswitch`` builds beside the stock
        one, ``mod-jambonz/`` (the jambonz mod_audio_fork, for ``playback.transport: stream``)."""
        self.binary, self.workdir = binary, workdir
        self.sip_port, self.esl_port, self.esl_password = sip_port, esl_port, esl_password
        if fork_module not in ("drachtio", "jambonz"):
            raise ValueError(f"fork_module is drachtio or jambonz, got {fork_module!r}")
        self.module_dir = Path(binary).resolve().parents[1] / "mod-jambonz" if fork_module == "jambonz" else None
        if self.module_dir is not None and not (self.module_dir / "mod_audio_fork.so").exists():
            raise RuntimeError(f"no jambonz mod_audio_fork at {self.module_dir} (just freeswitch builds it)")
        base = rtp_range() if rtp_base is None else rtp_base
        self.files = _conf_tree(rendered, sip_port, base, workdir / "conf", log_level)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> None:
        conf = self.workdir / "conf"
        for rel, text in self.files.items():
            p = conf / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
        dirs = {name: self.workdir / name for name in ("log", "db", "run", "temp")}
        for d in dirs.values():
            d.mkdir(exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-nonat", "-nc", "-nf", "-np", "-conf", str(conf), "-log", str(dirs["log"]),
            "-db", str(dirs["db"]), "-run", str(dirs["run"]), "-temp", str(dirs["temp"]),
            *(["-mod", str(self.module_dir)] if self.module_dir is not None else []),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await self._wait_ready(timeout, dirs["log"])
        except BaseException:
            await self.close()  # never leave a switch behind that the caller cannot stop
            raise

    async def _wait_ready(self, timeout: float, log_dir: Path) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if self.proc.returncode is not None:
                raise RuntimeError(f"FreeSWITCH exited with {self.proc.returncode}; see {log_dir}{_log_errors(log_dir)}")
            # Ready means the SIP profile runs, not only ESL: an INVITE sent before the profile is
            # up gets no answer, and a fork started within ~50 ms of ESL answering crashed the
            # switch (SIGSEGV, 2 of 3 tries on 1.10.12, seen by the bench on 2026-12-06).
            status = await self._esl_api("sofia status")
            if status is not None and any("external" in line and "RUNNING" in line for line in status.splitlines()):
                # mod_sofia loads before mod_audio_fork and mod_hash, so its profile can run while
                # they still load: wait for the core's "is ready" (after every module), then a
                # moment for mod_audio_fork's libwebsockets context, which its service thread makes
                # after the module load has returned (audio_pipe.cpp, lws_service_thread). A fork
                # started 41 ms after the module loaded never got past fork_session_init, and its
                # call never reached the fork server (a full run on 2026-12-07: "no call 0").
                core = await self._esl_api("status")
                if core is not None and re.search(r"^FreeSWITCH \(.*\) is ready", core, re.M):
                    await asyncio.sleep(0.2)
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(
            f"FreeSWITCH's SIP profile did not come up (ESL on {self.esl_port}, SIP on {self.sip_port}) "
            f"within {timeout} s{_log_errors(log_dir)}"
        )

    async def _esl_api(self, command: str) -> str | None:
        """One API command over a throwaway ESL connection; None while ESL does not answer."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.esl_port)
        except OSError:
            return None
        try:
            await asyncio.wait_for(reader.readuntil(b"\n\n"), 2)
            writer.write(f"auth {self.esl_password}\n\n".encode())
            if b"+OK accepted" not in await asyncio.wait_for(reader.readuntil(b"\n\n"), 2):
                return None
            writer.write(f"api {command}\n\n".encode())
            head = (await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)).decode()
            length = next((int(line.split(":", 1)[1]) for line in head.splitlines() if line.startswith("Content-Length")), 0)
            return (await asyncio.wait_for(reader.readexactly(length), 5)).decode(errors="replace")
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            return None
        finally:
            writer.close()

    @property
    def pid(self) -> int | None:
        """The FreeSWITCH process's id while it runs (for reading its CPU and memory from /proc)."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    @property
    def log_file(self) -> Path:
        return self.workdir / "log" / "freeswitch.log"

    async def close(self, grace_s: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``. A throwaway switch has nothing to save, and
        a clean exit takes 5.4-6.9 s on this box: the drachtio mod_audio_fork's shutdown sleeps
        2 s (AudioPipe::deinitialize, audio_pipe.cpp:488, seen with gdb) before libwebsockets'
        teardown; ~30 real-switch tests spent ~3 minutes on it. Its log ends ~0.4 s after the
        SIGTERM, so a second keeps everything the switch writes."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class RealStack:
    """The fork server and the reference connector in this process, a real FreeSWITCH beside
    them, and a SIP caller: ``async with RealStack(binary) as s: call = await s.place_call(...)``."""

    def __init__(
        self,
        binary: str,
        config: "str | Path | Config" = EXAMPLE_CONFIG,
        *,
        connector_mode: str = "script",
        connector_options: Mapping[str, Any] | None = None,
        playback: Mapping[str, Any] | None = None,
        connector_url_override: str | None = None,
        fork_module: str = "drachtio",
    ) -> None:
        self.binary = binary
        self.base = config if isinstance(config, Config) else load_config(str(config))
        self.env = stack_env(self.base)
        self.connector = ConnectorServer(connector_mode, **dict(connector_options or {}))
        self.playback = dict(playback or {})
        self.connector_url_override = connector_url_override
        self.fork_module = fork_module
        self.app: App | None = None
        self.switch: RealSwitch | None = None
        self.caller: SipCaller | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> "RealStack":
        try:
            return await self._enter()
        except BaseException:
            await self.__aexit__()  # a switch that did not come up must not outlive the test
            raise

    async def _enter(self) -> "RealStack":
        self._tmp = tempfile.TemporaryDirectory(prefix="voicefork-realfs-")
        self.workdir = Path(self._tmp.name)
        self.spool = self.workdir / "spool"
        self.spool.mkdir()
        (self.workdir / "temp").mkdir()
        await self.connector.start()
        esl_port, sip_port = free_port(), free_port()
        wiring = {
            "esl_port": esl_port,
            "fs_temp": str(self.workdir / "temp"),
            "spool": str(self.spool),
            "connector_urls": {n: self.connector_url_override or self.connector.url(f"/{n}") for n in self.base.connectors},
            "playback": self.playback,
            "recordings": str(self.workdir / "recordings"),
        }
        self.app = App(wire(self.base, fork_port=0, **wiring), env=self.env, listen_port=0)
        port = self.fork_port = await self.app.start()
        self.config = wire(self.base, fork_port=port, **wiring)
        self.rendered = render(self.config, self.env)
        self.switch = RealSwitch(
            self.binary, self.rendered, self.workdir, sip_port=sip_port, esl_port=esl_port,
            esl_password=self.env[self.base.freeswitch.esl_password_env], fork_module=self.fork_module,
        )
        await self.switch.start()
        if not await self.app.esl.wait_up(20):
            raise RuntimeError("the fork server did not get its ESL link to FreeSWITCH")
        self.caller = SipCaller(sip_port=sip_port)
        await self.caller.start()
        return self

    async def place_call(self, destination: str, number: str = "+15550001111", name: str = "Test Caller"):  # type: ignore[no-untyped-def]
        return await self.caller.place_call(destination, number, name)

    async def wait_call(self, key: str | int, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        """The connector's call ``key`` (see ConnectorServer.wait_call); if it does not come, an
        error that says what the switch and the fork server saw meanwhile (a real-switch test
        once failed with only "no call 0 within 10 s", 1 run in ~10, cause not found)."""
        try:
            return await self.connector.wait_call(key, timeout=timeout)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; {self.what_happened()}") from None

    def what_happened(self, lines: int = 20) -> str:
        """The switch's log lines about forks, errors and warnings (the last ``lines``), and the
        fork server's live calls and refusals: for an error message CI shows."""
        seen = []
        if self.switch is not None:
            try:
                text = self.switch.log_file.read_text(errors="replace").splitlines()
            except OSError:
                text = []
            keep = ("audio_fork", "[ERR]", "[WARNING]", "[CRIT]", "New Channel", "Hangup", "EXECUTE")
            seen = [re.sub(r"^[0-9a-f-]{36} ", "", line)[:300] for line in text
                    if any(k in line for k in keep) and "SQL ERR" not in line][-lines:]
        app = ""
        if self.app is not None:
            scrape = self.app.metrics.render().decode().splitlines()
            refused = [line for line in scrape if line.startswith(("voicefork_fork_rejected_total", "voicefork_errors_total"))]
            app = f"fork server: calls {sorted(self.app.calls)}, {refused or 'no refusals or errors'}"
        return f"{app}; the switch's log: " + " | ".join(seen)

    def point_connector(self, name: str, url: str) -> None:
        """Send connector ``name``'s calls to ``url`` from now on (a bot that needs the fork
        server's address, a Twilio bot's REST ``base_url``, starts after it)."""
        for holder in (self, self.app):
            c = holder.config.connectors
            holder.config = dataclasses.replace(holder.config, connectors={**c, name: dataclasses.replace(c[name], url=url)})

    def spool_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.spool)) for p in self.spool.rglob("*") if p.is_file())

    async def __aexit__(self, *exc: object) -> None:
        if self.caller is not None:
            await self.caller.close()
        if self.app is not None:
            await self.app.drain(2.0)
            await self.app.stop()
        if self.switch is not None:
            await self.switch.close()
        await self.connector.close()
        if self._tmp is not None:
            self._tmp.cleanup()
