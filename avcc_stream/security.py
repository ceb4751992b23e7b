"""Small guards used wherever names and URLs cross a trust boundary.

Camera names become MQTT topic levels and Redis key parts, so they must not carry MQTT
wildcards (`+`, `#`), topic separators (`/`) or Redis key separators (`:`). Camera URLs may
carry credentials (`rtsp://user:pass@host/...`): anything that is logged or published shows
the redacted form only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

CAMERA_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REDACTED = "***"


def validate_camera_name(name: str) -> str:
    """Return `name` if it is safe as an MQTT topic level and a Redis key part, else raise."""
    if not isinstance(name, str) or not CAMERA_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid camera name {name!r}: use 1-64 characters from letters, digits, "
            "'_', '.' and '-', starting with a letter or digit (no '+', '#', '/', ':' or spaces, "
            "which would break MQTT topics and Redis keys)"
        )
    return name


def redact_url(url: str) -> str:
    """`rtsp://user:secret@host:554/p?token=x` -> `rtsp://***@host:554/p?token=***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        query = "&".join(
            f"{pair.split('=', 1)[0]}={REDACTED}" if "=" in pair else pair
            for pair in query.split("&")
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
