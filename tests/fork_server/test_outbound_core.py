"""Outbound calls, the sans-I/O core: the request, the originate string, the status table, the
outcome of a cause, the rate limit, the book of calls, and the BACKGROUND_JOB event as the real
switch sends it."""

import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from fork_server import esl_messages as em
from fork_server.errors import InvalidTransition, LocalUsageError
from fork_server.outbound.originate import originate_args
from fork_server.outbound.request import MAX_BODY_BYTES, RequestError, parse_request
from fork_server.outbound.status import (Answered, CallBook, CallRecord, Ended, Failed, Ringing, Status, TokenBucket,
                                         TRANSITIONS, outcome)
from fork_server.outbound.webhook import encode_post, parse_status_line

UUID = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
JOB = "11111111-2222-3333-4444-555555555555"
ROUTES, TRUNKS = {"support", "sales"}, {"twilio", "backup"}
GOOD = {"to": "+15551230000", "from": "+15557654321", "route": "sales"}


def parse(doc, ctype="application/json", **kw):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    args = dict(routes=ROUTES, trunks=TRUNKS, default_trunk="twilio", default_timeout_s=30.0)
    return parse_request(body, ctype, **{**args, **kw})


def test_a_good_request_with_defaults():
    req = parse(GOOD)
    assert (req.to, req.from_, req.route, req.trunk, req.timeout_s, dict(req.metadata), req.switch) == (
        "+15551230000", "+15557654321", "sales", "twilio", 30, {}, None)
    req = parse({**GOOD, "trunk": "backup", "timeout": 7.5, "metadata": {"lead": "42", "score": 0.5, "vip": True, "n": None}})
    assert (req.trunk, req.timeout_s, req.metadata["score"]) == ("backup", 8, 0.5)


BAD = {
    "to missing": ({k: v for k, v in GOOD.items() if k != "to"}, "to"),
    "to national": ({**GOOD, "to": "5551230000"}, "to"),
    "to with a comma": ({**GOOD, "to": "+1555123,0000"}, "to"),
    "to a number": ({**GOOD, "to": 15551230000}, "to"),
    "to too long": ({**GOOD, "to": "+1" + "5" * 15}, "to"),
    "to with a newline": ({**GOOD, "to": "+15551230000\n"}, "to"),
    "from a SIP URI": ({**GOOD, "from": "sip:a@b"}, "from"),
    "unknown route": ({**GOOD, "route": "billing"}, "route"),
    "route missing": ({"to": GOOD["to"], "from": GOOD["from"]}, "route"),
    "unknown trunk": ({**GOOD, "trunk": "evil}sofia"}, "trunk"),
    "timeout too short": ({**GOOD, "timeout": 1}, "timeout"),
    "timeout a string": ({**GOOD, "timeout": "30"}, "timeout"),
    "timeout true": ({**GOOD, "timeout": True}, "timeout"),
    "metadata a list": ({**GOOD, "metadata": ["x"]}, "metadata"),
    "metadata nested": ({**GOOD, "metadata": {"a": {"b": 1}}}, "metadata.a"),
    "metadata long value": ({**GOOD, "metadata": {"a": "x" * 257}}, "metadata.a"),
    "metadata bad key": ({**GOOD, "metadata": {"a b": 1}}, "metadata"),
    "metadata too many keys": ({**GOOD, "metadata": {f"k{i}": i for i in range(17)}}, "metadata"),
    "unknown field": ({**GOOD, "callerid": "x"}, "callerid"),
    "switch with one switch": ({**GOOD, "switch": "fs-a"}, "switch"),
}


@pytest.mark.parametrize("doc,field", BAD.values(), ids=BAD.keys())
def test_bad_requests_name_the_field(doc, field):
    with pytest.raises(RequestError) as err:
        parse(doc)
    assert err.value.field == field and err.value.status == 400 and field in str(err.value)


def test_body_type_and_size():
    with pytest.raises(RequestError) as err:
        parse(GOOD, "text/plain")
    assert err.value.status == 415
    with pytest.raises(RequestError) as err:
        parse(b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert err.value.status == 413
    for raw in (b"[1]", b"{", b"\xff\xfe", b'"x"'):
        with pytest.raises(RequestError) as err:
            parse(raw)
        assert err.value.status == 400 and err.value.field is None
    with pytest.raises(RequestError, match="trunk"):
        parse(GOOD, default_trunk=None)
    assert parse({**GOOD, "switch": "fs-b"}, switches=["fs-a", "fs-b"]).switch == "fs-b"


SAFE = re.compile(r"\{(?:[a-z_]+=[A-Za-z0-9+_-]+,)*[a-z_]+=[A-Za-z0-9+_-]+\}sofia/gateway/[a-z0-9_-]+/\+[0-9]{7,15} "
                  r"[a-z0-9_-]+ XML voicefork_outbound")

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                     max_leaves=8)
_fieldval = st.one_of(st.sampled_from(["+15551230000", "+44207946000", "sales", "twilio", "support"]), _json,
                      st.text(alphabet="+0123456789,}{$ \n;'", max_size=20))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["to", "from", "route", "trunk", "timeout", "metadata", "switch", "x"]),
                       _fieldval, max_size=7))
def test_nothing_a_request_holds_makes_an_unsafe_originate(doc):
    try:
        req = parse(doc)
    except RequestError as exc:
        assert exc.status in (400, 413) and str(exc)
        return
    args = originate_args(uuid=UUID, to=req.to, from_=req.from_, trunk=req.trunk, route=req.route, timeout_s=req.timeout_s)
    assert SAFE.fullmatch(args), args
    assert "${" not in args and "\n" not in args and args.count(" ") == 3
    for value in req.metadata.values():  # metadata never reaches the switch
        if isinstance(value, str) and len(value) > 3:
            assert value not in args


def test_the_originate_string():
    assert originate_args(uuid=UUID, to="+15551230000", from_="+15557654321", trunk="twilio", route="sales", timeout_s=30) == (
        "{origination_uuid=3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b,origination_caller_id_number=+15557654321,"
        "origination_caller_id_name=+15557654321,originate_timeout=30,voicefork_route=sales,jitterbuffer_msec=20,"
        "ignore_early_media=true}sofia/gateway/twilio/+15551230000 sales XML voicefork_outbound")
    for bad in (dict(to="+1555,x=1"), dict(trunk="a}b"), dict(route="Sales"), dict(uuid="x"), dict(timeout_s=True)):
        with pytest.raises(LocalUsageError):
            originate_args(**{**dict(uuid=UUID, to="+15551230000", from_="+15557654321", trunk="t", route="r", timeout_s=5), **bad})
    assert em.bgapi_text("originate x y", JOB) == f"bgapi originate x y\nJob-UUID: {JOB}"
    for bad in ("originate a\nb", "originate ${x}", "Originate x"):
        with pytest.raises(LocalUsageError):
            em.bgapi_text(bad, JOB)


@pytest.mark.parametrize("cause,status", [
    ("USER_BUSY", Status.BUSY), ("NO_ANSWER", Status.NO_ANSWER), ("NO_USER_RESPONSE", Status.NO_ANSWER),
    ("ORIGINATOR_CANCEL", Status.NO_ANSWER), ("INVALID_GATEWAY", Status.FAILED), ("CALL_REJECTED", Status.FAILED),
    ("NORMAL_TEMPORARY_FAILURE", Status.FAILED), ("UNKNOWN", Status.FAILED)])
def test_outcome_of_a_cause(cause, status):
    assert outcome(cause) is status


def _record(**kw):
    req = parse(GOOD)
    return CallRecord(id=UUID, request=req, switch="default", created=100.0, job=JOB, **kw)


def test_status_table():
    r = _record()
    ringing = r.handle(Ringing(), 101.0)
    assert ringing.status is Status.RINGING and ringing.handle(Ringing(), 102.0) is ringing
    assert ringing.handle(Answered(), 103.0).status is Status.ANSWERED
    assert ringing.handle(Failed("NO_ANSWER"), 130.0).status is Status.NO_ANSWER
    a = r.handle(Answered(), 103.0)
    assert a.handle(Ringing(), 104.0) is a
    assert (a.status, a.answered) == (Status.ANSWERED, 103.0) and a.handle(Answered(), 104.0) is a
    c = a.handle(Ended("NORMAL_CLEARING"), 110.0)
    assert (c.status, c.cause, c.to_json()["duration_s"]) == (Status.COMPLETED, "NORMAL_CLEARING", 7.0)
    b = r.handle(Failed("USER_BUSY"), 101.0)
    assert (b.status, b.cause, b.ended) == (Status.BUSY, "USER_BUSY", 101.0)
    for done in (b, c):  # finished calls take nothing
        for ev in (Ringing(), Answered(), Failed("X"), Ended("Y")):
            assert done.handle(ev, 200.0) is done
    assert set(TRANSITIONS) == set(Status)

    class Odd:
        pass
    with pytest.raises(InvalidTransition):
        r.handle(Odd(), 1.0)  # type: ignore[arg-type]


def test_book_keeps_live_and_a_bounded_tail_of_finished():
    book = CallBook(keep=2, keep_s=60.0)
    ids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(4)]
    for i, cid in enumerate(ids):
        book.add(CallRecord(id=cid, request=parse(GOOD), switch="default", created=float(i), job=cid.replace("4000", "4001")))
    assert book.pending() == 4 and book.by_job(ids[0].replace("4000", "4001")).id == ids[0]
    assert book.apply(ids[0], Answered(), 1.0)[1] is True and book.apply(ids[0], Answered(), 2.0)[1] is False
    assert book.pending() == 3
    for cid in ids[1:]:
        book.apply(cid, Failed("USER_BUSY"), 5.0)
    assert list(book.finished) == ids[2:] and book.get(ids[1]) is None and book.get(ids[3]).status is Status.BUSY
    assert book.by_job(ids[3].replace("4000", "4001")) is None  # a finished call's job is forgotten
    book.prune(5.0 + 61)
    assert not book.finished and book.get(ids[0]).status is Status.ANSWERED
    assert book.apply("nope", Answered(), 1.0) is None


def test_token_bucket():
    b = TokenBucket(2, 3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.4) is False and b.take(0.5) is True  # one token per 0.5 s
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


# BACKGROUND_JOB as a real 1.10.12 sent it (the listener's copy; the issuer got none), cut to the
# lines the parser reads and a few around them.
REAL_JOB = (b"Event-Name: BACKGROUND_JOB\nCore-UUID: f363eef4-1dd8-4746-b3d8-3b5d7b445750\n"
            b"Event-Calling-File: mod_event_socket.c\nEvent-Calling-Function: api_exec\n"
            b"Job-UUID: 22222222-2222-3333-4444-555555555555\nJob-Command: originate\n"
            b"Job-Command-Arg: %7Borigination_uuid%3Daaaaaaaa-2222-3333-4444-555555555555%7Dsofia/gateway/nosuch/%2B15551230000\n"
            b"Content-Length: 21\n\n-ERR INVALID_GATEWAY\n")


def test_background_job_is_parsed_whole_and_byte_by_byte():
    ev = em.parse_plain(REAL_JOB)
    assert ev == em.BackgroundJob("22222222-2222-3333-4444-555555555555", None, "-ERR INVALID_GATEWAY\n")
    assert em.parse_plain(REAL_JOB.replace(b"Job-UUID: 2222", b"Job-UUID: zz22")) is None
    assert em.parse_event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": JOB}, "+OK " + UUID) == em.BackgroundJob(JOB, None, "+OK " + UUID)
    assert em.parse_plain(b"Event-Name: CHANNEL_PROGRESS\nUnique-ID: " + UUID.encode() +
                          b"\nvariable_voicefork_route: sales\n\n") == em.Progress(UUID, "sales")
    hang = em.parse_plain(b"Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: " + UUID.encode() +
                          b"\nHangup-Cause: USER_BUSY\nCaller-Channel-Answered-Time: 0\n\n")
    assert hang == em.HangupComplete(UUID, None, "USER_BUSY", answered=False)
    hang = em.parse_plain(b"Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: " + UUID.encode() +
                          b"\nHangup-Cause: NORMAL_CLEARING\nCaller-Channel-Answered-Time: 1796619724870367\n\n")
    assert hang.answered is True


def test_webhook_request_bytes():
    host, port, tls, data = encode_post("http://user:pw@127.0.0.1:8080/hook?a=1", {"id": "x", "status": "busy"})
    assert (host, port, tls) == ("127.0.0.1", 8080, False)
    assert data == (b"POST /hook?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: voicefork\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n"
                    b'{"id":"x","status":"busy"}')
    assert encode_post("https://h.example/", {})[1:3] == (443, True)
    assert parse_status_line(b"HTTP/1.1 204 No Content\r\n") == 204 and parse_status_line(b"garbage") is None
