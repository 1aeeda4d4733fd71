"""voicefork.v1 under its old name: the dialect now lives in :mod:`fork_server.dialects.voicefork`."""

from .dialects import voicefork as _voicefork

__all__ = list(_voicefork.__all__)
# Every name, limits included (MAX_DTMF_DURATION_MS …), so older imports keep working.
globals().update({k: v for k, v in vars(_voicefork).items() if not k.startswith("__")})
