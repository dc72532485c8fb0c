"""The SDK as the supervisor runs it: a process that registers, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from corral_plugin import _proto

HERE = Path(__file__).parent


def start_plugin(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "sleepy_plugin.py")],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving gRPC on " in line, line + process.stderr.read()  # type: ignore[union-attr]
    return process, line.rsplit(" ", 1)[-1].strip()


def test_sigterm_cancels_the_running_task_and_the_process_exits_in_the_grace(
    tmp_path: Path,
) -> None:
    process, address = start_plugin({})
    marker = tmp_path / "marker"
    with grpc.insecure_channel(address) as channel:
        invoke = channel.unary_stream(
            "/corral.plugin.v1.Plugin/Invoke",
            request_serializer=_proto.InvokeRequest.SerializeToString,
            response_deserializer=_proto.InvokeEvent.FromString,
        )
        events = invoke(_proto.InvokeRequest(task_id="t1", inputs={"marker": str(marker)}))
        first = next(events)
        assert first.log.text == "started"
        process.send_signal(signal.SIGTERM)
        # The call ends without a terminal event: the gateway sees an unfinished call.
        with pytest.raises(grpc.RpcError):
            for event in events:
                assert event.WhichOneof("event") not in ("result", "error")
    assert process.wait(timeout=5) == 0
    assert marker.read_text() == "cancelled"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[str]:
    binary = os.environ.get("CORRAL_BIN")
    if not binary:
        pytest.fail("set CORRAL_BIN to the corral binary (scripts/test does)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    address = f"127.0.0.1:{port}"
    arguments = [binary, "supervisor", "--grpc", address, "--plugin-folders", str(plugins)]
    arguments += ["--admin-token-file", str(tmp_path / "admin-token")]
    process = subprocess.Popen(
        arguments,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_registration_with_a_wrong_token_is_refused_and_the_plugin_exits(
    supervisor: str,
) -> None:
    process, _ = start_plugin(
        {"CORRAL_REGISTRY": f"http://{supervisor}", "CORRAL_PLUGIN_TOKEN": "0.forged"}
    )
    assert process.wait(timeout=10) == 2
    assert process.stderr is not None
    assert process.stderr.read().strip() == (
        "sleepy@v1-0-0: registration refused: PERMISSION_DENIED: "
        "invalid or already used registration token"
    )
