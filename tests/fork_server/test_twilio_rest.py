"""Twilio's REST hang-up on bytes alone: the reader (whole, byte by byte) and the answers."""

import base64
import json

import pytest

from fork_server.twilio_rest import RequestReader, RestError, answer, encode_response

ACCOUNT = "AC" + "ab" * 16
CALL = "CA" + "0f3b6c1e9a7d4e2b8c5f1234567890ab"
TOKEN = "s3cret-token"
PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"


def request(body=b"Status=completed", *, path=PATH, user=ACCOUNT, token=TOKEN, method="POST",
            ctype="application/x-www-form-urlencoded"):
    auth = base64.b64encode(f"{user}:{token}".encode()).decode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def read(raw, step=None):
    r = RequestReader()
    if step is None:
        return r.feed(raw)
    got = None
    for i in range(0, len(raw), step):
        assert got is None  # complete only with the last byte
        got = r.feed(raw[i:i + step])
    return got


def run(raw, live=(CALL,)):
    ended = []

    def hang_up(account, call):
        ended.append((account, call))
        return call in live

    status, body, extra = answer(read(raw), tokens={ACCOUNT: TOKEN}, hang_up=hang_up)
    return status, body, extra, ended


def test_reader_whole_and_byte_by_byte():
    raw = request()
    whole, bytewise = read(raw), read(raw, 1)
    assert whole == bytewise
    assert whole.method == "POST" and whole.target == PATH and whole.body == b"Status=completed"
    assert whole.headers["content-type"] == "application/x-www-form-urlencoded"


def test_reader_limits():
    with pytest.raises(RestError):
        RequestReader(max_bytes=100).feed(b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 20)
    with pytest.raises(RestError):
        RequestReader().feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(RestError):
        RequestReader().feed(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
    with pytest.raises(RestError):
        RequestReader().feed(b"GARBAGE\r\n\r\n")


def test_status_completed_hangs_up_and_answers_like_twilio():
    status, body, _, ended = run(request())
    assert status == 200 and body["sid"] == CALL and body["status"] == "completed"
    assert ended == [(ACCOUNT, CALL)]


def test_unknown_call_is_404_with_twilio_error_20404():
    status, body, _, _ = run(request(), live=())
    assert status == 404 and body["code"] == 20404 and body["status"] == 404


@pytest.mark.parametrize("token, user", [("wrong", ACCOUNT), (TOKEN, "AC" + "cd" * 16), ("", "")])
def test_bad_credentials_are_401_and_hang_up_nothing(token, user):
    status, body, extra, ended = run(request(token=token, user=user))
    assert status == 401 and "WWW-Authenticate" in extra and ended == []


@pytest.mark.parametrize(
    "body, needle",
    [(b"Status=canceled", "Status=canceled"), (b"Status=completed&Url=http://x", "Url="),
     (b"", "empty form"), (b"Twiml=%3CResponse%2F%3E", "Twiml="), (b"Status=completed&Status=completed", "Status")],
)
def test_other_fields_and_values_are_400_and_named(body, needle):
    status, out, _, ended = run(request(body))
    assert status == 400 and needle in out["message"] and ended == []


def test_other_paths_methods_and_bodies():
    assert run(request(path="/2010-04-01/Accounts/x/Calls.json"))[0] == 404
    assert run(request(method="GET"))[0] == 405
    assert run(request(ctype="application/json", body=b'{"Status":"completed"}'))[0] == 400


def test_response_bytes():
    raw = encode_response(200, {"sid": CALL}, {"X": "1"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: %d" % len(body) in head
    assert json.loads(body) == {"sid": CALL}
