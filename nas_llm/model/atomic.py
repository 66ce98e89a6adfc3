"""The one way nas-llm writes files: to a temporary sibling, then ``os.replace`` into place.

A killed process or a full disk therefore never leaves a torn table, a half-written model folder
or a truncated GGUF where the user asked for one. New files and folders get the user's umask
(``tempfile`` creates them 0600/0700, which would surprise anyone sharing a run folder).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, is_dir: bool) -> None:
    try:
        os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())
    except OSError:  # not ours to change (e.g. a read-only mount): keep tempfile's mode
        pass


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)``: ``tmp`` replaces ``p`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _chmod_default(tmp_path, is_dir=False)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any, **kwargs: Any) -> None:
    atomic_write_text(path, json.dumps(data, **{"indent": 1, **kwargs}))


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_dir(d) as tmp: fill(tmp)``: the filled folder replaces ``d`` only on success.

    An existing ``d`` is moved aside first and deleted only after the new folder is in place, so a
    failure at any point leaves either the old folder or nothing, never a mix.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        _chmod_default(tmp, is_dir=True)
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, trash / "old")
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(trash / "old", out)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_dir"]
