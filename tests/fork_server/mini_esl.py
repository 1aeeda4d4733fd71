"""A minimal ESL peer for loopback tests of the fork server's adapters.

It frames replies as FreeSWITCH's mod_event_socket does (auth/request, command/reply with
Reply-Text, api/response with Content-Length, text/event-plain with URL-encoded values).
``on_api`` / ``on_sendmsg`` hooks let a test script the switch. The faithful emulator of
REF's playback timing is issue 4's; this peer makes no timing claims.
"""

import asyncio
from urllib.parse import quote


def event_frame(headers):
    """A ``text/event-plain`` frame as mod_event_socket writes it: URL-encoded values."""
    data = "".join(f"{k}: {quote(v)}\n" for k, v in headers.items()) + "\n"
    return b"Content-Type: text/event-plain\nContent-Length: %d\n\n" % len(data) + data.encode()


class MiniEsl:
    def __init__(self, password="pw"):
        self.password = password
        self.commands = []
        self.event_writers = []
        self.on_api = None
        self.on_sendmsg = None

    async def start(self):
        self.server = await asyncio.start_server(self.client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def client(self, reader, writer):
        writer.write(b"Content-Type: auth/request\n\n")
        try:
            while True:
                block = (await reader.readuntil(b"\n\n")).decode()
                first, *rest = block.strip("\n").split("\n")
                self.commands.append(block)
                if first.startswith("auth "):
                    ok = first[5:] == self.password
                    writer.write(f"Content-Type: command/reply\nReply-Text: {'+OK accepted' if ok else '-ERR invalid'}\n\n".encode())
                    if not ok:
                        await writer.drain()
                        writer.close()
                        return
                elif first.startswith("api "):
                    text = self.on_api(first[4:]) if self.on_api else None
                    if asyncio.iscoroutine(text):  # a hook may hold its reply (a stalled command)
                        text = await text
                    if text is None:
                        text = "-ERR no such channel\n" if "bad" in first else f"+OK {first[4:]}\n"
                    body = text.encode()
                    writer.write(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body)
                elif first.startswith("event "):
                    self.event_writers.append(writer)
                    writer.write(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n")
                else:
                    if first.startswith("sendmsg ") and self.on_sendmsg:
                        hdrs = dict(line.split(": ", 1) for line in rest if ": " in line)
                        self.on_sendmsg(first[8:].strip(), hdrs)
                    writer.write(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def emit(self, headers):
        self.send_events(event_frame(headers))

    def send_events(self, raw):
        """Raw bytes on every live event connection (a test's own framing, good or not)."""
        self.event_writers = [w for w in self.event_writers if not w.is_closing()]
        for w in self.event_writers:
            w.write(raw)

    async def close(self):
        self.server.close()
        for w in self.event_writers:
            w.close()


