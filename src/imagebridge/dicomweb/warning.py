"""The ``Warning`` response header (RFC 7234 §5.5) as DICOMweb uses it (PS3.18 §8.4.1).

HTTP header values are ASCII; reasons are not (patient names, file contents quoted in a
parser's message). Every Warning header goes through :func:`header` so that none can
break the response.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_TEXT = 900
"""Keep the header well under common proxy limits (8 KiB per header section)."""


def ascii_text(text: str) -> str:
    """``text`` made safe inside a quoted-string: printable ASCII, quotes and backslashes escaped."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return safe.replace("\\", "\\\\").replace('"', '\\"')


def header(messages: Iterable[str], agent: str = "imagebridge") -> str:
    """``299 imagebridge "..."`` entries, comma-separated, one per distinct message."""
    entries: list[str] = []
    size = 0
    for message in dict.fromkeys(messages):
        entry = f'299 {agent} "{ascii_text(message[:MAX_TEXT])}"'
        if entries and size + len(entry) > MAX_TEXT:
            entries.append(f'299 {agent} "further warnings omitted"')
            break
        entries.append(entry)
        size += len(entry)
    return ", ".join(entries)
