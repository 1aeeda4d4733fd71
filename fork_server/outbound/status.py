"""An outbound call's status as a transition table, the outcome of a FreeSWITCH cause, the
rate limit and the bounded book of calls (sans-I/O: time comes in as numbers).

::

    queued ──Ringing──▶ ringing ──Answered──▶ answered ──Ended──▶ completed
      │                   │
      └───────────────────┴──Failed(cause)──▶ busy | no-answer | failed     (outcome(cause))

``Ringing`` comes from the leg's CHANNEL_PROGRESS (the callee's 180; a callee that answers or
refuses at once never rings); ``Answered`` comes from the originate's BACKGROUND_JOB (``+OK``) or from the call's fork,
whichever is first; ``Failed`` from ``-ERR <CAUSE>`` (or an originate the switch never took);
``Ended`` from the leg's CHANNEL_HANGUP_COMPLETE. A finished call ignores everything after.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Final, Mapping

from ..errors import InvalidTransition
from .request import CallRequest

__all__ = ["Status", "Ringing", "Answered", "Failed", "Ended", "TRANSITIONS", "outcome", "CallRecord", "TokenBucket",
           "CallBook", "FINISHED", "RINGING_OR_QUEUED"]


class Status(enum.Enum):
    QUEUED = "queued"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"


FINISHED: Final = frozenset({Status.COMPLETED, Status.BUSY, Status.NO_ANSWER, Status.FAILED})


@dataclass(frozen=True, slots=True)
class Ringing:
    pass


@dataclass(frozen=True, slots=True)
class Answered:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    cause: str


@dataclass(frozen=True, slots=True)
class Ended:
    cause: str


_OUTCOME: Final = object()  # the target of Failed: outcome(cause)
_STAY: Final = object()  # nothing changes

TRANSITIONS: Final[Mapping[Status, Mapping[type, Any]]] = {
    Status.QUEUED: {Ringing: Status.RINGING, Answered: Status.ANSWERED, Failed: _OUTCOME, Ended: Status.COMPLETED},
    Status.RINGING: {Ringing: _STAY, Answered: Status.ANSWERED, Failed: _OUTCOME, Ended: Status.COMPLETED},
    Status.ANSWERED: {Ringing: _STAY, Answered: _STAY, Failed: _STAY, Ended: Status.COMPLETED},
    **{s: {Ringing: _STAY, Answered: _STAY, Failed: _STAY, Ended: _STAY} for s in FINISHED},
}
RINGING_OR_QUEUED: Final = frozenset({Status.QUEUED, Status.RINGING})  # not answered yet: pending

# USER_BUSY is the callee's 486 (or 600); a ring that runs out is NO_ANSWER (originate_timeout)
# or NO_USER_RESPONSE (a 408 from the far end); the rest is a failure with its cause.
_BUSY: Final = frozenset({"USER_BUSY"})
_NO_ANSWER: Final = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT"})


def outcome(cause: str) -> Status:
    if cause in _BUSY:
        return Status.BUSY
    if cause in _NO_ANSWER:
        return Status.NO_ANSWER
    return Status.FAILED


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What ``GET /v1/calls/<id>`` serves and the webhook posts. Times are wall-clock seconds."""

    id: str  # the channel uuid the fork server chose (origination_uuid)
    request: CallRequest
    switch: str
    created: float
    status: Status = Status.QUEUED
    cause: str | None = None
    answered: float | None = None
    ended: float | None = None
    job: str = ""  # the bgapi Job-UUID

    def handle(self, event: Ringing | Answered | Failed | Ended, now: float) -> "CallRecord":
        """The record after ``event`` (itself when nothing changes)."""
        target = TRANSITIONS[self.status].get(type(event))
        if target is None:
            raise InvalidTransition(self.status.value, type(event).__name__)
        if target is _STAY:
            return self
        if target is _OUTCOME:
            assert isinstance(event, Failed)
            return replace(self, status=outcome(event.cause), cause=event.cause, ended=now)
        if target is Status.RINGING:
            return replace(self, status=Status.RINGING)
        if target is Status.ANSWERED:
            return replace(self, status=Status.ANSWERED, answered=now)
        assert isinstance(event, Ended)  # (queued: a call answered and ended before its job's +OK came)
        return replace(self, status=Status.COMPLETED, cause=event.cause, ended=now,
                       answered=self.answered if self.answered is not None else now)

    def to_json(self) -> dict[str, Any]:
        r = self.request
        duration = round(self.ended - self.answered, 3) if self.ended is not None and self.answered is not None else None
        return {"id": self.id, "status": self.status.value, "to": r.to, "from": r.from_, "route": r.route,
                "trunk": r.trunk, "switch": self.switch, "timeout": r.timeout_s, "metadata": dict(r.metadata),
                "cause": self.cause, "created": self.created, "answered": self.answered, "ended": self.ended,
                "duration_s": duration}


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` says whether one was there."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"TokenBucket: rate {rate!r} and burst {burst!r} must be positive")
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class CallBook:
    """Live calls (queued or answered) by id, and finished ones, the newest ``keep`` of them for
    at most ``keep_s`` seconds."""

    keep: int = 1000
    keep_s: float = 3600.0
    live: dict[str, CallRecord] = field(default_factory=dict)
    finished: "OrderedDict[str, CallRecord]" = field(default_factory=OrderedDict)
    _by_job: dict[str, str] = field(default_factory=dict)

    def add(self, record: CallRecord) -> None:
        self.live[record.id] = record
        if record.job:
            self._by_job[record.job] = record.id

    def pending(self) -> int:
        return sum(1 for r in self.live.values() if r.status in RINGING_OR_QUEUED)

    def get(self, call_id: str) -> CallRecord | None:
        return self.live.get(call_id) or self.finished.get(call_id)

    def by_job(self, job: str) -> CallRecord | None:
        call_id = self._by_job.get(job)
        return self.live.get(call_id) if call_id is not None else None

    def apply(self, call_id: str, event: Ringing | Answered | Failed | Ended, now: float) -> tuple[CallRecord, bool] | None:
        """Feed one event to a live call: (its record now, whether it changed), or None when no
        live call has that id."""
        old = self.live.get(call_id)
        if old is None:
            return None
        new = old.handle(event, now)
        if new is old:
            return old, False
        if new.status in FINISHED:
            del self.live[call_id]
            self._by_job.pop(new.job, None)
            self.finished[call_id] = new
            self.prune(now)
        else:
            self.live[call_id] = new
        return new, True

    def prune(self, now: float) -> None:
        while self.finished and (len(self.finished) > self.keep
                                 or (next(iter(self.finished.values())).ended or now) < now - self.keep_s):
            self.finished.popitem(last=False)
