"""Opening the files a user hands us: one place that knows what a wrong file looks like.

Every reader of user files — records (:mod:`kubedistill.core.records`), YAML configs and recipes
(:mod:`kubedistill.core.config`) — checks the path and decodes the bytes here, so that every kind of
wrong file is the same one-line error (exit 2) wherever it is given:

* a missing path, a directory, something that is not a regular file, a file we may not read;
* an empty file (no bytes, or only blank lines / comments: the caller decides what counts as content);
* a file of another kind under the expected name: gzip, zip, Parquet, UTF-16/UTF-32 text, binary
  (NUL bytes) — :func:`sniff` names it from its first bytes;
* text that is not UTF-8: :func:`decode_utf8` names the first bad byte with its line and column.

A UTF-8 byte-order mark at the start of a file is not an error: it is dropped (Windows editors and
Excel write one).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kubedistill.core.errors import BadInputError

UTF8_BOM = b"\xef\xbb\xbf"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip file"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PAR1", "a Parquet file"),
    (b"\x00\x00\xfe\xff", "UTF-32 text"),
    (b"\xff\xfe\x00\x00", "UTF-32 text"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
    (b"\x89HDF", "an HDF5 file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
)


class BadFileError(BadInputError):
    """A file cannot be used at all (missing, a directory, empty, another format, not UTF-8): one line, exit 2."""


def check_file(path: str | os.PathLike[str], *, what: str = "file", error: type[BadInputError] = BadFileError) -> Path:
    """``path`` as a :class:`Path` once it is a readable regular file; else ``error`` with one line that
    says what is wrong (``no such file``, ``is a directory``, ``permission denied``, ...). ``what`` names
    what was expected (``records file``, ``YAML file``)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except NotADirectoryError:
        raise error(f"{p}: no such file (a parent of it is not a directory)") from None
    except PermissionError:
        raise error(f"{p}: permission denied") from None
    except OSError as e:
        raise error(f"{p}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{p}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISFIFO(st.st_mode) and not stat.S_ISCHR(st.st_mode):
        raise error(f"{p}: is not a regular file (expected a {what})")
    if not os.access(p, os.R_OK):
        raise error(f"{p}: permission denied")
    return p


def sniff(head: bytes) -> str | None:
    """What a file is when it is not text, from its first bytes: ``"a gzip file"``, ``"UTF-16 text"``,
    ``"binary data"`` (a NUL byte in the first 4 KiB)...; None for anything that may be UTF-8 text."""
    if head.startswith(UTF8_BOM):
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if b"\x00" in head[:4096]:
        return "binary data"
    return None


def utf8_error_message(data: bytes, err: UnicodeDecodeError, *, line: int | None = None) -> str:
    """``byte 0xe9 at line 3, column 12 is not UTF-8`` for a decoding error in ``data`` (a whole file, or
    one line of it when ``line`` is given)."""
    pos = err.start
    bad = data[pos : pos + 1].hex()
    if line is None:
        line = data.count(b"\n", 0, pos) + 1
        column = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    else:
        column = pos + 1
    return f"byte 0x{bad} at line {line}, column {column} is not UTF-8"


def decode_utf8(data: bytes, path: str | os.PathLike[str], *, error: type[BadInputError] = BadFileError) -> str:
    """The text of a whole file: UTF-8, a leading byte-order mark dropped. Another encoding or a binary
    file is ``error`` naming the first bad byte's line and column (``save it as UTF-8``)."""
    kind = sniff(data[:4096])
    if kind is not None:
        raise error(f"{path}: is {kind}, not UTF-8 text")
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {utf8_error_message(data, e)} (save the file as UTF-8)") from None


def read_text(path: str | os.PathLike[str], *, what: str = "file", error: type[BadInputError] = BadFileError) -> str:
    """A whole text file, checked (:func:`check_file`) and decoded (:func:`decode_utf8`)."""
    p = check_file(path, what=what, error=error)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"{p}: cannot be read ({e.strerror or e})") from None
    return decode_utf8(data, p, error=error)
