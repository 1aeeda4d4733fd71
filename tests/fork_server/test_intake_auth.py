import base64

from hypothesis import given, strategies as st

from fork_server.intake import BasicCredentials, check_basic_auth

CREDS = BasicCredentials("freeswitch", "s3cr:et")


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


def test_right_credentials_pass_and_password_may_hold_a_colon():
    assert check_basic_auth(basic(b"freeswitch", b"s3cr:et"), CREDS)


def test_wrong_or_missing_credentials_fail():
    assert not check_basic_auth(None, CREDS)
    assert not check_basic_auth("", CREDS)
    assert not check_basic_auth(basic(b"freeswitch", b"wrong"), CREDS)
    assert not check_basic_auth(basic(b"other", b"s3cr:et"), CREDS)
    assert not check_basic_auth("Bearer abc", CREDS)
    assert not check_basic_auth("Basic !!!notbase64", CREDS)
    assert not check_basic_auth("Basic " + base64.b64encode(b"nocolon").decode(), CREDS)


def test_repr_never_shows_the_password():
    assert "s3cr" not in repr(CREDS)


@given(st.text(max_size=200))
def test_arbitrary_headers_never_raise(header):
    assert check_basic_auth(header, CREDS) in (True, False)
