"""Playing the connector's speech to the caller, as sans-I/O cores.

``core``: the TTS path of one call (resampling, segments, marks, barge-in, the switch's
feedback); one small strategy per transport says how a segment reaches the switch:

* ``files``: raw files in the spool, queued over ESL (sendmsg or uuid_broadcast), the default;
* ``inband``: playAudio messages over the fork socket, files written by the switch.
"""

from .core import CONNECTOR_RATE, TTS_IDLE, WATCHDOG, Item, Playback, Transport
from .files import FileTransport
from .inband import InbandTransport

__all__ = ["Playback", "Item", "Transport", "FileTransport", "InbandTransport", "CONNECTOR_RATE", "WATCHDOG",
           "TTS_IDLE"]
