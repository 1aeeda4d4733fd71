"""The rendered conf tree loads into a REAL FreeSWITCH as intended (``FREESWITCH_BIN``; see conftest.py).

The example config's Twilio trunk becomes a gateway of the external profile and its signalling
CIDRs the ``voicefork_trunks`` ACL list; the rendered Event Socket takes the rendered password
and refuses FreeSWITCH's default.
"""

import asyncio
import os

import pytest

BIN = os.environ.get("FREESWITCH_BIN")
pytestmark = pytest.mark.freeswitch  # skipped without FREESWITCH_BIN, failed under CI=true (conftest.py)
pytest.importorskip("ESL")

from testbed.real_switch import RealStack  # noqa: E402


async def esl_says(port, password, command):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readuntil(b"\n\n")
        writer.write(f"auth {password}\n\n".encode())
        if b"+OK accepted" not in await reader.readuntil(b"\n\n"):
            return None
        writer.write(f"api {command}\n\n".encode())
        head = (await reader.readuntil(b"\n\n")).decode()
        length = int(next(l.split(":")[1] for l in head.splitlines() if l.startswith("Content-Length")))
        return (await reader.readexactly(length)).decode()
    finally:
        writer.close()


async def test_trunk_gateway_acl_and_event_socket_load_as_rendered():
    async with RealStack(BIN) as s:
        port, pw = s.switch.esl_port, s.switch.esl_password
        for _ in range(50):  # the profile starts, and adds its gateways, after ESL is up
            gw = await esl_says(port, pw, "sofia status gateway twilio")
            if "Invalid Gateway" not in gw:
                break
            await asyncio.sleep(0.2)
        assert "sip:example.pstn.twilio.com" in gw and "sip:voicefork@example.pstn.twilio.com" in gw, gw
        assert "Context \tpublic" in gw and "auto_to_user" in gw and "NOREG" in gw, gw  # register: false
        assert (await esl_says(port, pw, "acl 54.172.60.1 voicefork_trunks")).strip() == "true"
        assert (await esl_says(port, pw, "acl 54.172.60.4 voicefork_trunks")).strip() == "false"
        assert (await esl_says(port, pw, "acl 10.1.2.3 voicefork_trunks")).strip() == "false"
        assert await esl_says(port, "ClueCon", "status") is None  # the default password is refused
        print("real FreeSWITCH: gateway twilio up in the external profile; ACL voicefork_trunks as rendered")
