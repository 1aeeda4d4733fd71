"""The fork server's single exception tree.

::

    VoiceforkError
     ├── LocalUsageError            we misused an API (bad argument, wrong state)
     │    └── InvalidTransition     session event not allowed in the current state
     └── RemoteError                a peer misbehaved or failed (.peer names it)
          ├── ForkProtocolError     mod_audio_fork sent something off-spec
          ├── ConnectorProtocolError
          └── EslError
               ├── EslUnavailable   no ESL connection right now
               │    └── EslLostInFlight  sent, then the connection died: the switch may have run it
               ├── EslCommandError  the switch answered -ERR
               └── EslProtocolError the switch's framing is off-spec, or fatal to python-ESL

Local errors are bugs on our side; remote errors are counted and handled per call,
never allowed to take the process down (STYLE.md, after h11).
"""

from __future__ import annotations

__all__ = [
    "VoiceforkError",
    "LocalUsageError",
    "InvalidTransition",
    "RemoteError",
    "ForkProtocolError",
    "ConnectorProtocolError",
    "EslError",
    "EslUnavailable",
    "EslLostInFlight",
    "EslCommandError",
    "EslProtocolError",
]


class VoiceforkError(Exception):
    """Base of every error the fork server raises on purpose."""


class LocalUsageError(VoiceforkError):
    """We called an API wrongly: a bug in voicefork, not a peer's fault."""


class InvalidTransition(LocalUsageError):
    """A session event arrived in a state whose table has no entry for it."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(state, event)
        self.state = state
        self.event = event

    def __str__(self) -> str:
        return f"event {self.event} is not allowed in state {self.state}"


class RemoteError(VoiceforkError):
    """A peer misbehaved or failed."""

    peer = "remote"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.peer}: {self.message}"


class ForkProtocolError(RemoteError):
    peer = "freeswitch"


class ConnectorProtocolError(RemoteError):
    peer = "connector"


class EslError(RemoteError):
    peer = "esl"


class EslUnavailable(EslError):
    """There is no ESL connection right now (down, reconnecting, or never up)."""


class EslLostInFlight(EslUnavailable):
    """The command went out, then the connection died before the reply: it may have run."""


class EslCommandError(EslError):
    """The switch answered a command with -ERR (the reply text is kept)."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"{command.split(' ', 1)[0]} failed: {reply.strip()}")
        self.command = command
        self.reply = reply


class EslProtocolError(EslError):
    """The switch sent ESL framing we cannot read, or that python-ESL would crash or hang on."""
