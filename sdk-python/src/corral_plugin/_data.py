"""Reading the data a task is given: http(s), ``data:`` and, where the plugin's
manifest allows it, ``file://localhost`` URLs, always with a size cap."""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import TaskError

if TYPE_CHECKING:
    import email.message

MAX_DATA_BYTES = 256 * 1024 * 1024
"""The default cap of one read: 256 MiB."""


@dataclass(frozen=True)
class Data:
    """The bytes behind a data URL, with what the server said about them."""

    url: str
    content: bytes
    content_type: str
    filename: str | None

    @property
    def text(self) -> str:
        """The content decoded (the declared charset, else UTF-8)."""
        charset = "utf-8"
        if "charset=" in self.content_type:
            charset = self.content_type.split("charset=", 1)[1].split(";")[0].strip() or charset
        return self.content.decode(charset, errors="replace")

    def json(self) -> Any:
        """The content parsed as JSON."""
        return json.loads(self.content)


def files_allowed() -> bool:
    """Whether the supervisor lets this plugin read ``file://localhost`` URLs."""
    return os.environ.get("CORRAL_ALLOW_FILE_URLS") == "1"


def read(url: str, *, max_bytes: int = MAX_DATA_BYTES, timeout: float = 60) -> Data:
    """Reads ``url``; raises :class:`TaskError` with a readable reason."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "file":
        return _read_file(url, max_bytes)
    if scheme not in ("http", "https", "data"):
        raise TaskError(f"unsupported data URL scheme {scheme!r} in {url[:100]!r}")
    import urllib.request  # only here: it costs a plugin's start tens of ms

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            content = response.read(max_bytes + 1)
            headers: email.message.Message = response.headers
    except Exception as error:  # urllib raises many kinds; all end the read the same way
        raise TaskError(f"failed to read {url[:100]}: {error}") from error
    if len(content) > max_bytes:
        raise TaskError(f"the data at {url[:100]} is larger than {max_bytes} bytes")
    filename = headers.get_filename()
    if filename is None and scheme != "data":
        last = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        filename = urllib.parse.unquote(last) or None
    return Data(url, content, headers.get_content_type() if headers else "", filename)


def _read_file(url: str, max_bytes: int) -> Data:
    if not files_allowed():
        raise TaskError("file:// data URLs are not allowed for this plugin")
    if not url.startswith("file://localhost/"):
        raise TaskError("only file://localhost/... URLs can be read")
    path = urllib.parse.unquote(url[len("file://localhost") :])
    try:
        with open(path, "rb") as file:
            content = file.read(max_bytes + 1)
    except OSError as error:
        raise TaskError(f"failed to read {path}: {error.strerror}") from error
    if len(content) > max_bytes:
        raise TaskError(f"{path} is larger than {max_bytes} bytes")
    guessed = _guess_type(path)
    return Data(url, content, guessed, os.path.basename(path))


def _guess_type(path: str) -> str:
    import mimetypes

    return mimetypes.guess_type(path)[0] or "application/octet-stream"
