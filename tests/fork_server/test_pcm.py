import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fork_server.errors import LocalUsageError
from fork_server.pcm import Framer, OddByteCarry, StreamResampler, rms_dbfs, silence

RATIOS = [(8000, 16000), (16000, 8000), (24000, 8000), (24000, 16000)]


def sine(freq, rate, seconds=1.0, amp=16000.0):
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * amp).astype("<i2").tobytes()


def snr_db(pcm, freq, rate, delay_ms, amp=16000.0):
    y = np.frombuffer(pcm, "<i2").astype(float)
    n = np.arange(y.size)
    ref = np.sin(2 * np.pi * freq * (n / rate - delay_ms / 1000)) * amp
    mid = slice(y.size // 4, 3 * y.size // 4)
    return 10 * np.log10(np.sum(ref[mid] ** 2) / np.sum((y[mid] - ref[mid]) ** 2))


@pytest.mark.parametrize("in_rate,out_rate", RATIOS)
@pytest.mark.parametrize("freq", [300, 1000, 2500, 3400])
def test_in_band_snr_is_at_least_85_db(in_rate, out_rate, freq):
    r = StreamResampler(in_rate, out_rate)
    out = r.process(sine(freq, in_rate)) + r.flush()
    assert snr_db(out, freq, out_rate, r.delay_ms) >= 85.0


def test_caller_path_delay_is_at_most_3_ms():
    assert StreamResampler(8000, 16000).delay_ms <= 3.0


@pytest.mark.parametrize("in_rate,out_rate", RATIOS)
def test_images_and_aliases_are_suppressed(in_rate, out_rate):
    # A tone the other side of the band edge must vanish (image on the way up, alias on the way down).
    m = min(in_rate, out_rate)
    r = StreamResampler(in_rate, out_rate)
    if in_rate < out_rate:
        out = r.process(sine(3000, in_rate)) + r.flush()
        y = np.frombuffer(out, "<i2").astype(float)
        spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
        freqs = np.fft.rfftfreq(y.size, 1 / out_rate)
        image = spectrum[np.argmin(np.abs(freqs - (in_rate - 3000)))]
        assert 20 * np.log10(image / spectrum.max()) < -80
    else:
        # out_rate - 1000 Hz folds onto 1 kHz, inside the telephone band.
        out = r.process(sine(out_rate - 1000, in_rate)) + r.flush()
        y = np.frombuffer(out, "<i2").astype(float)[out_rate // 10 :]
        spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size))) / (y.size / 4)
        freqs = np.fft.rfftfreq(y.size, 1 / out_rate)
        in_band = spectrum[freqs <= 3400].max()
        assert 20 * np.log10(max(in_band, 1e-9) / 16000) < -80


@settings(max_examples=60, deadline=None)
@given(
    ratio=st.sampled_from(RATIOS + [(16000, 16000), (22050, 8000)]),
    cuts=st.lists(st.integers(min_value=0, max_value=800), max_size=40),
    seed=st.integers(0, 2**16),
)
def test_chunking_never_changes_the_output(ratio, cuts, seed):
    in_rate, out_rate = ratio
    rng = np.random.default_rng(seed)
    x = rng.integers(-20000, 20000, size=in_rate // 5, dtype=np.int16).astype("<i2").tobytes()
    one = StreamResampler(in_rate, out_rate)
    whole = one.process(x) + one.flush()
    chunked = StreamResampler(in_rate, out_rate)
    parts, pos = [], 0
    for c in sorted(cuts):
        c = min(c * 2, len(x))
        if c >= pos:
            parts.append(chunked.process(x[pos:c]))
            pos = c
    parts.append(chunked.process(x[pos:]))
    parts.append(chunked.flush())
    joined = b"".join(parts)
    assert len(joined) == len(whole) == 2 * round(len(x) // 2 * out_rate / in_rate)
    diff = np.abs(np.frombuffer(joined, "<i2").astype(int) - np.frombuffer(whole, "<i2").astype(int))
    assert diff.max(initial=0) <= 1


def test_no_artefacts_at_20_ms_chunk_edges():
    r = StreamResampler(8000, 16000)
    x = sine(1000, 8000)
    out = b"".join(r.process(x[i : i + 320]) for i in range(0, len(x), 320)) + r.flush()
    ref = StreamResampler(8000, 16000)
    assert out == ref.process(x) + ref.flush()


def test_passthrough_is_exact_and_odd_lengths_are_refused():
    r = StreamResampler(16000, 16000)
    data = sine(440, 16000, 0.1)
    assert r.process(data) == data and r.flush() == b"" and r.delay_ms == 0
    with pytest.raises(LocalUsageError):
        StreamResampler(8000, 16000).process(b"\x00\x01\x02")
    with pytest.raises(LocalUsageError):
        r.process(b"\x00")
    with pytest.raises(LocalUsageError):
        StreamResampler(0, 16000)


def test_reset_forgets_history():
    r = StreamResampler(8000, 16000)
    r.process(sine(1000, 8000, 0.1))
    r.reset()
    assert r.process(silence(20, 8000)) == silence(20, 16000)


def test_framer_whole_bytewise_and_trailing_data():
    data = bytes(range(256)) * 5  # 1280 bytes
    whole = Framer(640, max_bytes=6400)
    assert whole.push(data + b"xy") == [data[:640], data[640:1280]]
    assert whole.take_all() == b"xy"
    bytewise = Framer(640, max_bytes=6400)
    frames = [f for i in range(len(data)) for f in bytewise.push(data[i : i + 1])]
    assert frames == [data[:640], data[640:]]
    assert bytewise.buffered == 0


def test_framer_bounded_drops_oldest_whole_frames():
    f = Framer(4, max_bytes=8)
    f.feed_bounded(b"aaaabbbbcccc")
    assert f.dropped_bytes == 4 and f.take_all() == b"bbbbcccc"
    with pytest.raises(LocalUsageError):
        Framer(0, max_bytes=10)


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=10))
def test_odd_byte_carry_keeps_every_byte_in_order(data, cuts):
    carry, out, pos = OddByteCarry(), [], 0
    for c in sorted(cuts) + [len(data)]:
        c = min(c, len(data))
        if c >= pos:
            piece = carry.push(data[pos:c])
            assert len(piece) % 2 == 0
            out.append(piece)
            pos = c
    joined = b"".join(out)
    assert joined == data[: len(data) - len(data) % 2]
    assert carry.pending == len(data) % 2


def test_silence_and_level():
    assert silence(20, 8000) == bytes(320)
    assert rms_dbfs(bytes(320)) == float("-inf")
    assert -4 < rms_dbfs(sine(1000, 8000, 0.1, amp=32767)) < -2
