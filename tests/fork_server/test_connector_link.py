"""The connector link on loopback: keepalive against a half-open peer, and which caller frames
it hands back when lost (issue 6: a hung connector's socket buffers swallow the caller)."""

import asyncio
import logging
import socket

from websockets.asyncio.server import serve

from fork_server.connector_link import CONFIRMED_TAIL_FRAMES, ConnectorLink

LOG = logging.LoggerAdapter(logging.getLogger("test.link"), {})


def _frame(i: int) -> bytes:
    return (i % 65536).to_bytes(2, "little") * 320


class _Peer:
    """A connector that reads (and so answers pings) until ``hang`` is set, then keeps its
    socket open but reads nothing more: a stuck process, as the kernel sees it."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()
        self.done = asyncio.Event()
        self.received: list[bytes] = []

    async def handler(self, ws) -> None:
        reader = asyncio.create_task(self._read(ws))
        await self.hang.wait()
        # Stop taking bytes off the socket, but let the reader drain what websockets already
        # took in: its protocol answered pings for those frames, so the link rightly treats
        # them as delivered. Cancelling the reader lost them (a flake, 1 run in 6).
        ws.transport.pause_reading()
        try:
            # A failed assertion must not leave the server's close waiting on this handler.
            await asyncio.wait_for(self.done.wait(), 10)
        finally:
            reader.cancel()

    async def _read(self, ws) -> None:
        async for m in ws:
            if isinstance(m, bytes):
                self.received.append(m)


async def _link(url, lost, **kw):
    link = ConnectorLink(
        url, headers={}, connect_timeout_s=2, max_queued_frames=100,
        on_event=lambda ev: asyncio.sleep(0), on_lost=lambda code, reason: lost.set_result(reason), log=LOG, **kw,
    )
    await link.open()
    return link


async def _pump(link, first, n, sent=None):
    for i in range(first, first + n):
        link.send_audio([_frame(i)])
        if sent is not None:
            sent.append(i)
        await asyncio.sleep(0.02)


async def test_a_healthy_connector_confirms_frames_by_pong_so_few_are_kept():
    peer = _Peer()
    async with serve(peer.handler, "127.0.0.1", 0, subprotocols=["voicefork.v1"], close_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.get_running_loop().create_future()
        link = await _link(f"ws://127.0.0.1:{port}/", lost, ping_interval_s=0.1, ping_timeout_s=0.5)
        await _pump(link, 0, 50)  # 1 s
        # Only what was written since the last answered ping is kept (about 0.1 s + the RTT).
        assert link._unacked_frames <= 10, link._unacked_frames
        assert not lost.done()
        peer.hang.set()
        peer.done.set()
        link.abort()


async def test_the_last_confirmed_frames_are_handed_back_too():
    # A pong proves only that the connector's WebSocket library read the frames; they may still
    # sit in its receive queue (websockets: 16 messages) when the connector dies. The chaos suite
    # under load lost up to 4 such frames from a connector that aborted its socket.
    peer = _Peer()
    async with serve(peer.handler, "127.0.0.1", 0, subprotocols=["voicefork.v1"], close_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.get_running_loop().create_future()
        link = await _link(f"ws://127.0.0.1:{port}/", lost, ping_interval_s=0.05, ping_timeout_s=0.5)
        await _pump(link, 0, 50)
        await asyncio.sleep(0.3)  # pongs confirm all 50
        unacked, back, again = link._unacked_frames, link.take_unconfirmed(), link.take_unconfirmed()
        peer.hang.set()
        peer.done.set()
        link.abort()
        assert unacked == 0
        assert [int.from_bytes(f[:2], "little") for f in back] == list(range(50 - CONFIRMED_TAIL_FRAMES, 50))
        assert again == []


async def test_a_half_open_connector_is_found_and_its_unread_frames_are_handed_back_in_order():
    peer = _Peer()
    async with serve(peer.handler, "127.0.0.1", 0, subprotocols=["voicefork.v1"], close_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.get_running_loop().create_future()
        sent: list[int] = []
        last_before_loss: list[int] = []

        def on_lost(code, reason):  # what the call had handed the link when it learnt of the loss
            last_before_loss.append(sent[-1])
            lost.set_result(reason)

        link = ConnectorLink(
            f"ws://127.0.0.1:{port}/", headers={}, connect_timeout_s=2, max_queued_frames=100,
            on_event=lambda ev: asyncio.sleep(0), on_lost=on_lost, log=LOG, ping_interval_s=0.1, ping_timeout_s=0.3,
        )
        await link.open()
        await _pump(link, 0, 25)
        await asyncio.sleep(0.15)  # a ping answered after the last of them
        read_before = len(peer.received)
        peer.hang.set()
        pump = asyncio.create_task(_pump(link, 25, 200, sent))
        reason = await asyncio.wait_for(lost, 3)
        pump.cancel()
        assert link.timed_out, reason
        back = link.take_unconfirmed()
        # Everything the peer did not read comes back, oldest first, without holes; frames it
        # did read may come back too (before the pong that would have confirmed them).
        indices = [int.from_bytes(f[:2], "little") for f in back]
        assert back and indices == list(range(indices[0], indices[0] + len(indices)))
        assert indices[0] <= len(peer.received)  # nothing the peer missed is before the run
        # ...and it runs to the last frame handed to the link before the loss (the pump may hand
        # it one more before it is cancelled: a call sends no more to a lost link).
        assert indices[-1] >= last_before_loss[0]
        assert read_before >= 20  # the peer was really reading before it hung
        assert link.take_unconfirmed() == []
        peer.done.set()


async def test_the_replay_keeps_at_most_max_replay_frames_the_newest():
    peer = _Peer()
    async with serve(peer.handler, "127.0.0.1", 0, subprotocols=["voicefork.v1"], close_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.get_running_loop().create_future()
        link = await _link(f"ws://127.0.0.1:{port}/", lost, ping_interval_s=5, ping_timeout_s=5, max_replay_frames=20)
        await _pump(link, 0, 40)  # no ping yet: nothing confirmed
        back = link.take_unconfirmed()
        indices = [int.from_bytes(f[:2], "little") for f in back]
        assert indices == list(range(20, 40))
        peer.hang.set()
        peer.done.set()
        link.abort()


async def test_the_loss_is_reported_at_the_peers_close_frame_not_when_it_drops_tcp():
    # A connector that closes (1011) while its own reading is paused cannot read our close reply,
    # so it keeps TCP open for its whole close timeout. The link must not wait for that.
    closed_tcp = asyncio.Event()
    peer_done = asyncio.Event()

    async def handler(ws):
        ws.transport.pause_reading()
        await ws.close(1011, "no resume")  # waits its close_timeout for a reply it cannot read
        closed_tcp.set()
        await peer_done.wait()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["voicefork.v1"], close_timeout=0.5) as server:
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.get_running_loop().create_future()
        link = ConnectorLink(
            f"ws://127.0.0.1:{port}/", headers={}, connect_timeout_s=2, ping_interval_s=5, max_queued_frames=100,
            on_event=lambda ev: asyncio.sleep(0), log=LOG,
            on_lost=lambda code, reason: lost.set_result((code, reason, link._ws.transport.is_closing())),
        )
        await link.open()
        try:
            code, reason, tcp_closing = await asyncio.wait_for(lost, 5)
        finally:
            link.abort()
            peer_done.set()
        # Reported while TCP is still up: neither the peer's close nor our close timer (2 s) ended it.
        assert not closed_tcp.is_set() and not tcp_closing
        assert (code, reason) == (1011, "no resume")


async def test_a_slow_but_reading_connector_is_not_cut_by_keepalive_and_a_stopped_one_is():
    # A connector reading at 0.5x real time answers our ping only after the audio queued ahead
    # of it in the socket buffers (~1.3 s here), past ping_timeout. While the kernel keeps
    # taking our bytes it is alive (CI flake: a 0.5x connector was cut after 1 s); once it
    # stops reading, the pong deadline holds.
    stop = asyncio.Event()
    done = asyncio.Event()
    read: list[int] = []

    async def handler(ws):
        async def slow():
            async for m in ws:
                read.append(len(m))
                await asyncio.sleep(0.04)  # one 20 ms frame per 40 ms: 0.5x
                if stop.is_set():
                    ws.transport.pause_reading()
                    return
        task = asyncio.create_task(slow())
        try:
            await asyncio.wait_for(done.wait(), 15)
        finally:
            task.cancel()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted sockets inherit it
    sock.bind(("127.0.0.1", 0))
    async with serve(handler, sock=sock, subprotocols=["voicefork.v1"], close_timeout=0.2, max_queue=4) as server:
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.get_running_loop().create_future()
        link = await _link(f"ws://127.0.0.1:{port}/", lost, ping_interval_s=0.5, ping_timeout_s=1.0)
        try:
            await _pump(link, 0, 250)  # 5 s
            assert not lost.done(), lost.result()
            assert link._ws.last_rtt > 1.0  # it really was behind: pongs came after ping_timeout
            stop.set()
            t0 = asyncio.get_running_loop().time()
            pump = asyncio.create_task(_pump(link, 250, 250))
            await asyncio.wait_for(lost, 5)
            pump.cancel()
            assert link.timed_out
            assert asyncio.get_running_loop().time() - t0 < 4
        finally:
            done.set()
            link.abort()
