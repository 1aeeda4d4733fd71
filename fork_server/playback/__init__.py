"""Playing the connector's speech to the caller, as sans-I/O cores.

``core``: the TTS path of one call (resampling, segments, marks, barge-in, the switch's
feedback); one small strategy per transport says how a segment reaches the switch:

* ``files``: raw files in the spool, queued over ESL (sendmsg or uuid_broadcast), the default;
* ``inband``: playAudio messages over the fork socket, files written by the switch;
* ``stream``: binary frames over the fork socket, played by the jambonz mod_audio_fork (no
  files, no ESL playback; its own core, :class:`StreamPlayback`, since nothing of the file
  queue applies).
"""

from .core import CONNECTOR_RATE, TTS_IDLE, WATCHDOG, Item, Playback, Transport
from .files import FileTransport
from .inband import InbandTransport
from .stream import PROBE_TIMER, STREAM_WATCHDOG, StreamPlayback

__all__ = ["Playback", "Item", "Transport", "FileTransport", "InbandTransport", "StreamPlayback", "CONNECTOR_RATE",
           "WATCHDOG", "STREAM_WATCHDOG", "PROBE_TIMER", "TTS_IDLE"]
