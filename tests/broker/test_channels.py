"""Exec frame codec: channel bytes, v5 close, status frames, line reassembly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.transport import channels


def test_encode_prefixes_the_channel_byte() -> None:
    assert channels.encode(channels.STDIN, b'{"a":1}\n') == b'\x00{"a":1}\n'
    assert channels.encode(channels.STDERR) == b"\x02"


def test_encode_rejects_channels_outside_a_byte() -> None:
    with pytest.raises(channels.FrameError):
        channels.encode(256, b"x")


def test_v5_close_frame_half_closes_stdin() -> None:
    assert channels.encode_close(channels.V5) == b"\xff\x00"


def test_v4_has_no_close_frame() -> None:
    with pytest.raises(channels.FrameError, match="v5 only"):
        channels.encode_close(channels.V4)


@pytest.mark.parametrize("protocol", [channels.V4, channels.V5])
@given(channel=st.sampled_from([0, 1, 2, 3, 4]), payload=st.binary(max_size=64))
def test_decode_inverts_encode(protocol: str, channel: int, payload: bytes) -> None:
    assert channels.decode(channels.encode(channel, payload), protocol) == (channel, payload)


def test_decode_one_byte_frame_is_an_empty_payload() -> None:
    # The API server opens each channel with a frame that holds only the channel byte.
    assert channels.decode(b"\x01") == (channels.STDOUT, b"")


def test_decode_close_only_in_v5() -> None:
    assert channels.decode(b"\xff\x00", channels.V5) == (channels.CLOSE, b"\x00")
    with pytest.raises(channels.FrameError, match="unknown exec channel 255"):
        channels.decode(b"\xff\x00", channels.V4)


@pytest.mark.parametrize("frame", [b"", b"\x07abc"])
def test_decode_rejects_empty_and_unknown_channels(frame: bytes) -> None:
    with pytest.raises(channels.FrameError):
        channels.decode(frame)


def test_status_success_is_exit_zero() -> None:
    status = channels.parse_status(b'{"metadata":{},"status":"Success"}')
    assert status.success and status.exit_code == 0


def test_status_non_zero_exit_code_from_causes() -> None:
    doc = {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: exit status 137",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "137"}]},
    }
    status = channels.parse_status(json.dumps(doc).encode())
    assert not status.success
    assert status.exit_code == 137
    assert status.reason == "NonZeroExitCode"
    assert "137" in status.message


def test_status_failure_without_code_keeps_the_message() -> None:
    doc = {
        "status": "Failure",
        "reason": "InternalError",
        "message": 'exec: "gpu-agent": executable file not found in $PATH',
    }
    status = channels.parse_status(json.dumps(doc).encode())
    assert not status.success and status.exit_code is None
    assert "executable file not found" in status.message


@pytest.mark.parametrize("payload", [b"not json", b"[1,2]", b'{"status":"Weird"}'])
def test_malformed_status_is_never_success(payload: bytes) -> None:
    assert not channels.parse_status(payload).success


def test_line_splitter_reassembles_lines_split_across_frames() -> None:
    splitter = channels.LineSplitter()
    assert splitter.feed(b'{"id":1,') == []
    assert splitter.feed(b'"x":2}\n{"id"') == [b'{"id":1,"x":2}']
    assert splitter.pending == b'{"id"'
    assert splitter.feed(b":2}\n\n") == [b'{"id":2}', b""]


@given(
    st.lists(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=8),
)
def test_line_splitter_any_chunking_gives_the_same_lines(
    lines: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    splitter = channels.LineSplitter()
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += splitter.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == lines
    assert splitter.pending == b""


def test_line_splitter_bounds_a_line_without_newline() -> None:
    splitter = channels.LineSplitter(max_line=10)
    splitter.feed(b"12345")
    with pytest.raises(channels.FrameError, match="exceeds 10 bytes"):
        splitter.feed(b"678901")


def test_tail_buffer_keeps_the_last_bytes_and_lines() -> None:
    tail = channels.TailBuffer(limit=32)
    for i in range(20):
        tail.feed(f"line {i}\n".encode())
    assert len(tail.text(max_lines=100)) <= 40
    assert tail.text(max_lines=2) == "line 18 | line 19"
