"""Where an upload's bytes come from: a local path or an Airflow ``ObjectStoragePath``."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import TrueFoundryConfigError

CHUNK_BYTES = 1024 * 1024


class FileSource:
    """An upload's file, opened afresh for each read so a retry streams it from the start.

    :param file: a local path, a URL string such as ``s3://b/k``, or anything with ``.open()`` and
        ``.name`` (duck-typed ``ObjectStoragePath``: no Airflow-version-specific import).
    """

    def __init__(self, file: Any) -> None:
        if isinstance(file, str) and "://" in file:
            # The compat provider resolves it to airflow.sdk (3.x) or airflow.io.path (2.11).
            from airflow.providers.common.compat.sdk import ObjectStoragePath

            file = ObjectStoragePath(file)
        self.location = str(file)
        self._open: Callable[[], IO[bytes]]
        if isinstance(file, str | os.PathLike):
            path = Path(file)
            self.name = path.name
            self._open = lambda: path.open("rb")
        elif callable(getattr(file, "open", None)):
            self.name = str(getattr(file, "name", "") or "")
            self._open = lambda: file.open("rb")
        else:
            raise TrueFoundryConfigError(
                f"upload_file takes a local path (str or pathlib.Path) or an ObjectStoragePath, "
                f"got {type(file).__name__}."
            )

    def open(self) -> IO[bytes]:
        """Open the file for reading, or raise a :class:`TrueFoundryConfigError` saying why not."""
        try:
            return self._open()
        except FileNotFoundError:
            raise self._error(
                "does not exist; check the path (and that it is visible to the worker)"
            ) from None
        except IsADirectoryError:
            raise self._error("is a directory; give the path of the JSONL file itself") from None
        except PermissionError:
            raise self._error("cannot be read: permission denied for the user running the task") from None
        except OSError as err:
            raise self._error(f"could not be opened ({type(err).__name__}: {str(err)[:200]})") from None

    def validate(self) -> int:
        """Read the file once, streamed, refuse it unless it is JSONL the gateway accepts; return its size."""
        validator = protocol.JsonlValidator(self.name or self.location)
        with self.open() as stream:
            while not validator.too_large and (chunk := self._read(stream, CHUNK_BYTES)):
                validator.feed(chunk)
        validator.close()
        return validator.size

    def _read(self, stream: IO[bytes], size: int) -> bytes:
        try:
            return stream.read(size)
        except OSError as err:
            raise self._error(f"could not be read ({type(err).__name__}: {str(err)[:200]})") from None

    def _error(self, problem: str) -> TrueFoundryConfigError:
        return TrueFoundryConfigError(f"The file to upload, {self.location}, {problem}. Nothing was sent.")


class SizedReader:
    """A read-only stream with the ``len`` the multipart encoder needs (object storage lacks ``fileno()``)."""

    def __init__(self, stream: IO[bytes], source: FileSource) -> None:
        self._stream = stream
        self._source = source
        try:
            end: int | None = os.fstat(stream.fileno()).st_size
        except (OSError, AttributeError, io.UnsupportedOperation):
            end = getattr(stream, "size", None)  # fsspec's remote files know theirs
        if not isinstance(end, int):
            position = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            stream.seek(position)
        self._remaining = end - stream.tell()

    @property
    def len(self) -> int:
        """Bytes left to read."""
        return self._remaining

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left for -1)."""
        chunk = self._source._read(self._stream, size if size is not None and size >= 0 else self._remaining)
        self._remaining = max(0, self._remaining - len(chunk))
        return chunk
