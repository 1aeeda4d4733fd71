import pytest

from fork_server.errors import LocalUsageError
from fork_server.spool import SpoolLayout, raw_extension, valid_uuid

UUID = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def test_segment_paths_are_under_both_roots():
    layout = SpoolLayout("/var/spool/voicefork", "/mnt/voicefork")
    local, remote = layout.segment_paths(UUID, 7, 8000)
    assert local == f"/var/spool/voicefork/{UUID}/000007.r8"
    assert remote == f"/mnt/voicefork/{UUID}/000007.r8"
    assert layout.segment_paths(UUID, 0, 16000)[1].endswith("/000000.r16")


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", UUID + "/..", "x" * 36, UUID.replace("-", "/"), "", UUID + "\n", " " + UUID],
)
def test_invalid_uuids_never_become_paths(bad):
    assert not valid_uuid(bad)
    with pytest.raises(LocalUsageError):
        SpoolLayout("/s", "/s").segment_paths(bad, 0, 8000)


def test_roots_must_be_absolute_and_rates_known():
    with pytest.raises(LocalUsageError):
        SpoolLayout("spool", "/s")
    with pytest.raises(LocalUsageError):
        raw_extension(44100)
    with pytest.raises(LocalUsageError):
        SpoolLayout("/s", "/s").segment_paths(UUID, -1, 8000)
