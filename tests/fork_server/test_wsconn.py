"""The lean connection's own client frames (issue 5) parse as websockets' own."""

from hypothesis import given, settings, strategies as st
from websockets.frames import Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from fork_server.wsconn import _MaskPool, _masked_binary_frames


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=70000), min_size=1, max_size=4))
def test_masked_frames_are_read_back_by_websockets_server_protocol(messages):
    server = ServerProtocol(state=OPEN, max_size=1 << 20)
    server.receive_data(_masked_binary_frames(messages))
    frames = server.events_received()
    assert [f.data for f in frames] == messages
    assert all(f.opcode is Opcode.BINARY and f.fin for f in frames)
    assert server.data_to_send() == []  # no protocol error, no close


def test_mask_keys_are_fresh_random_bytes():
    pool = _MaskPool()
    keys = [pool.take() for _ in range(3000)]  # crosses the 4 KiB refill
    assert all(len(k) == 4 for k in keys)
    assert len(set(keys)) > 2990
