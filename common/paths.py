"""Output paths: file names built from input data, and checks of output arguments.

* :func:`safe_name`: a file-name component made from data (a video id, a label, a class name) that
  cannot leave its folder: no separator, no leading dot (so never ``.`` or ``..``), no control
  character, at most :data:`MAX_NAME` characters. A name that had to change gets ``-`` and 8 hex
  digits of the sha256 of the original appended, so two different inputs never share a name (a
  name is kept verbatim only when it is already safe and does not itself end like a changed one;
  two changed names coincide only on a sha256 prefix collision).
* :func:`check_output_dir` / :func:`check_output_file`: raise :class:`OutputPathError` with a one-line
  reason when an output argument cannot be used (a regular file where a folder is expected, a folder
  where a file is expected, a parent that is a file, an unwritable place). They create nothing.
* :func:`unusable_outputs`: what a command-line tool does with those checks: print ``prog: reason``
  on one line for the first unusable output argument, and say whether there was one.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import TextIO

__all__ = ["MAX_NAME", "OutputPathError", "safe_name", "check_output_dir", "check_output_file", "unusable_outputs"]

MAX_NAME = 100                       # characters of a sanitised name, hash tail included
_UNSAFE = re.compile(r"[^\w.+=-]", re.UNICODE)      # \w: letters, digits, underscore (any script)


class OutputPathError(ValueError):
    """An output argument that cannot be used; the message says why in one line."""


def safe_name(text: str) -> str:
    """``text`` as one file-name component that stays inside its folder (see the module docstring).

    Unchanged when it is already safe (letters, digits, ``_ . + = -``, no leading dot, at most
    :data:`MAX_NAME` characters); otherwise unsafe characters become ``_``, leading dots are dropped,
    the result is cut to fit, and ``-`` + 8 hex digits of ``sha256(text)`` are appended.
    """
    text = str(text)
    clean = _UNSAFE.sub("_", text).lstrip(".")
    if clean == text and 0 < len(clean) <= MAX_NAME and not _looks_hashed(clean):
        return clean
    tail = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[:MAX_NAME - 9]}-{tail}" if clean else tail


def _looks_hashed(name: str) -> bool:
    """A safe name ending like a changed one (``-`` + 8 hex digits) is changed too, so that no
    unchanged name can equal a sanitised one."""
    return re.search(r"-[0-9a-f]{8}$", name) is not None or re.fullmatch(r"[0-9a-f]{8}", name) is not None


def _check_parent(path: Path, what: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{what} {path}: {parent} is not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(f"{what} {path}: cannot write in {parent} (permission denied)")
            return


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as an output folder: it is a writable folder, or it can be created. Returns it.

    Raises:
        OutputPathError: it is an existing non-folder, a parent is a file, or the place is not writable.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{what} {path} is an existing file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {path}: cannot write in it (permission denied)")
        return path
    _check_parent(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as an output file: a regular file to replace, or a new file in a writable (or creatable)
    folder. Returns it.

    Raises:
        OutputPathError: it is an existing folder, a parent is a file, or the place is not writable.
    """
    path = Path(path)
    if str(path).endswith(os.sep) or path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder, not a file")
    _check_parent(path, what)
    return path


def unusable_outputs(prog: str, files: dict[str, str | os.PathLike | None] | None = None,
                     dirs: dict[str, str | os.PathLike | None] | None = None, stream: TextIO | None = None) -> bool:
    """Check a tool's output arguments before it starts: ``files`` and ``dirs`` map each flag (as the
    message should name it) to its value; None values are skipped. On the first one that cannot be used
    print ``prog: reason`` on one line to ``stream`` (stderr) and return True; otherwise return False."""
    checks = [(flag, value, check_output_file) for flag, value in (files or {}).items()]
    checks += [(flag, value, check_output_dir) for flag, value in (dirs or {}).items()]
    for flag, value, check in checks:
        if value is None:
            continue
        try:
            check(value, flag)
        except OutputPathError as exc:
            print(f"{prog}: {exc}", file=stream or sys.stderr)
            return True
    return False
