"""Checking a JSONL training file before it is sent, fed in chunks by the transport."""

from __future__ import annotations

import json

from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.protocol.answers import json_type

# The gateway's documented limit per file; checked before upload so a large file is refused in
# seconds rather than after minutes of sending.
MAX_FILE_BYTES = 512 * 1024 * 1024
# How many bad lines a refusal names: enough to see a pattern, short enough to read.
MAX_REPORTED_LINES = 5


class JsonlValidator:
    """Check a JSONL training file fed in chunks: one JSON object a line, not empty, not too big.

    Sans-I/O: the caller reads the file and feeds :meth:`feed`; :meth:`close` raises a
    :class:`TrueFoundryConfigError` naming the first bad line numbers. :attr:`too_large` lets the
    caller stop reading early. The last line may lack its newline; a blank line is refused.
    """

    def __init__(self, name: str, *, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.size = 0
        self.lines = 0
        self.bad_lines: list[tuple[int, str]] = []
        self.bad_count = 0
        self._partial = b""

    @property
    def too_large(self) -> bool:
        """Whether the file is already past :attr:`max_bytes` (no need to read further)."""
        return self.size > self.max_bytes

    def feed(self, chunk: bytes) -> None:
        """Check every complete line in ``chunk`` (with what is left of the previous chunk)."""
        self.size += len(chunk)
        if not self.too_large:
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in lines:
                self._check(line)

    def close(self) -> None:
        """Check the last line and raise if the file is not one JSON object a line."""
        if self._partial and not self.too_large:
            self._check(self._partial)
            self._partial = b""
        where = f"The training file {self.name!r}"
        if self.too_large:
            raise TrueFoundryConfigError(
                f"{where} is over {self.max_bytes // (1024 * 1024)} MB, the gateway's limit per file; "
                "split it or sample it down."
            )
        if self.lines == 0:
            raise TrueFoundryConfigError(f"{where} is empty; it needs one JSON object a line (JSONL).")
        if self.bad_lines:
            shown = "; ".join(f"line {number}: {problem}" for number, problem in self.bad_lines)
            more = (
                f" (and {self.bad_count - len(self.bad_lines)} more)"
                if self.bad_count > len(self.bad_lines)
                else ""
            )
            raise TrueFoundryConfigError(
                f"{where} is not JSONL (one JSON object a line): {self.bad_count} bad line(s) — "
                f"{shown}{more}. Fix those lines, or pass validate=False to upload it as it is."
            )

    def _check(self, line: bytes) -> None:
        self.lines += 1
        problem = "blank line" if not line.strip() else _json_object_problem(line)
        if problem is not None:
            self.bad_count += 1
            if len(self.bad_lines) < MAX_REPORTED_LINES:
                self.bad_lines.append((self.lines, problem))


def _json_object_problem(line: bytes) -> str | None:
    try:
        value = json.loads(line)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except (ValueError, RecursionError):
        return "not valid JSON"
    return None if isinstance(value, dict) else f"a JSON {json_type(value)}, not an object"
