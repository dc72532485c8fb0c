#!/usr/bin/env python3
"""Step round trip of a running Corral: how long from a step's submission
(`POST …/demo-step-process/`) until the task's end is visible on its event
stream, for hello-world-multi-step. Sequential, bounded in count.

    bench/step_roundtrip.py http://127.0.0.1:5005 200

Prints the median, p90 and p99 in milliseconds. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

PLUGIN = "hello-world-multi-step@v0-2-1"


def connect(base: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(
        base.hostname or "127.0.0.1", base.port, timeout=30
    )


def events(
    connection: http.client.HTTPConnection, path: str
) -> Iterator[tuple[str, Any]]:
    """Yields (event, data) of a task's SSE stream."""
    connection.request("GET", path, headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"event stream answered {response.status}")
    name, data = "message", ""
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def post(
    base: urllib.parse.SplitResult, path: str, form: dict[str, str]
) -> http.client.HTTPResponse:
    connection = connect(base)
    body = urllib.parse.urlencode(form)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def one(base: urllib.parse.SplitResult) -> float:
    created = post(base, f"/plugins/{PLUGIN}/process/", {"inputStr": "round trip"})
    task = urllib.parse.urlsplit(created.headers["Location"]).path
    connection = connect(base)
    stream = events(connection, f"{task}events")
    step_href = None
    for name, data in stream:
        if name == "step":
            step_href = data["href"]
        elif name == "snapshot" and data.get("steps"):
            step_href = data["steps"][-1]["href"]
        if step_href:
            break
    assert step_href, "no step"
    started = time.perf_counter()
    answer = post(base, urllib.parse.urlsplit(step_href).path, {"inputStr": "next"})
    if answer.status != 303:
        raise RuntimeError(f"step answered {answer.status}")
    # The same stream goes on: the step's continuation, then the status.
    for name, data in stream:
        if name == "status":
            elapsed = time.perf_counter() - started
            if data["status"] != "SUCCESS":
                raise RuntimeError(f"task ended {data['status']}")
            connection.close()
            return elapsed * 1000
    raise RuntimeError("stream ended without a status")


def main() -> None:
    base = urllib.parse.urlsplit(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    for _ in range(5):
        one(base)
    times = sorted(one(base) for _ in range(count))

    def quantile(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))]

    print(
        f"step round trip over {count}: median {statistics.median(times):.2f} ms, "
        f"p90 {quantile(0.9):.2f} ms, p99 {quantile(0.99):.2f} ms"
    )


if __name__ == "__main__":
    main()
