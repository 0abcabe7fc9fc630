"""User ids as file names: ids from user files never become paths outside the output folder."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(value: str) -> str:
    """A file-name-safe form of a user id."""
    text = _SAFE.sub("_", str(value).strip()).strip("._")
    return text[:100]
