"""Where dataset files are looked for, and how missing ones are fetched.

Search order for a dataset's files (first match wins):

1. ``root`` (the ``--data-root`` flag), also some usual sub-folders of it;
2. the directory named by the environment variable ``LASSOPRUNE_DATA``;
3. system-wide copies (e.g. Debian's ``/usr/share/datasets/fashion-mnist``);
4. the user cache ``$XDG_CACHE_HOME/lassoprune/<name>`` (``~/.cache/...``).

Downloads go to ``root`` when one is given, else to the user cache. The base
URL can be replaced by a mirror: the ``mirror=`` option of the loaders, else
the environment variable ``LASSOPRUNE_MIRROR``; the file name is appended.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from lassoprune.errors import DataNotFoundError, IntegrityError

DATA_ENV = "LASSOPRUNE_DATA"
MIRROR_ENV = "LASSOPRUNE_MIRROR"
_CHUNK = 1 << 20


def cache_dir(name: str) -> Path:
    """The per-user cache folder of dataset ``name`` (not created)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lassoprune" / name


def search_dirs(
    name: str,
    root: str | os.PathLike[str] | None,
    subdirs: Sequence[str] = (),
    system_dirs: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Folders to look in for dataset ``name``, in order, without duplicates.

    ``root`` and ``$LASSOPRUNE_DATA`` are each tried with every entry of
    ``subdirs`` appended first, then as they are.
    """
    bases = [Path(p).expanduser() for p in (root, os.environ.get(DATA_ENV)) if p]
    found: list[Path] = []
    for base in bases:
        found += [base / sub for sub in subdirs] + [base]
    found += [Path(p) for p in system_dirs]
    found.append(cache_dir(name))
    return list(dict.fromkeys(found))


def download_dir(name: str, root: str | os.PathLike[str] | None) -> Path:
    """Where downloads of ``name`` go: ``root`` if given, else the user cache."""
    return Path(root).expanduser() if root else cache_dir(name)


def resolve_url(filename: str, default_base: str, mirror: str | None = None) -> str:
    """URL of ``filename`` under ``mirror``, ``$LASSOPRUNE_MIRROR`` or ``default_base``."""
    base = mirror or os.environ.get(MIRROR_ENV) or default_base
    return base.rstrip("/") + "/" + filename


def download(
    url: str,
    dest: str | os.PathLike[str],
    md5: str,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest``, checking its MD5; the file appears atomically.

    The data streams into a hidden temporary file next to ``dest``, which is
    renamed onto ``dest`` only when its MD5 equals ``md5``. On any failure the
    temporary file is removed and ``dest`` is left untouched.

    Raises:
        IntegrityError: the MD5 of the fetched data differs from ``md5``.
        DataNotFoundError: the server could not be reached or refused the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, progress, timeout, dest.name)
        if actual != md5.lower():
            raise IntegrityError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {actual}. The download "
                "was discarded; try again, or fetch the file by hand from the official site."
            )
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, out: BinaryIO, progress: bool, timeout: float, label: str) -> str:
    """Copy ``url`` into the open binary file ``out``; returns the MD5 of the bytes copied."""
    from tqdm import tqdm

    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            show = progress and sys.stderr.isatty()
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not show) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataNotFoundError(
            f"could not download {url}: {_reason(exc)}. Check the network connection, set "
            f"{MIRROR_ENV} to a reachable mirror, or fetch the file by hand into a folder DIR and pass root=DIR."
        ) from exc
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """A short description of a network error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def not_found_message(
    what: str,
    looked_in: Iterable[Path],
    wanted: Iterable[str],
    urls: Iterable[str],
    reason: str,
) -> str:
    """The text of a :class:`DataNotFoundError`: what was missing, where, and how to fix it.

    Args:
        what: e.g. ``"fashion-mnist (train split)"``.
        looked_in: every folder searched.
        wanted: the file or folder names looked for.
        urls: where the files can be fetched.
        reason: why nothing was downloaded (download disabled, network error).
    """
    places = "\n".join(f"  {p}" for p in looked_in)
    links = "\n".join(f"  {u}" for u in urls)
    return (
        f"{what} not found. Looked for {', '.join(wanted)} in:\n{places}\n"
        f"{reason}\n"
        f"To fix it, download\n{links}\n"
        f"into a folder DIR and pass root=DIR, or set {DATA_ENV}=DIR; "
        f"or allow downloading (set {MIRROR_ENV} to use a mirror)."
    )
