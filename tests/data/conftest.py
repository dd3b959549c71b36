"""Fixtures of the data tests: an isolated environment, file writers and a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user data folder, no mirror, and a private cache; returns the cache base."""
    monkeypatch.delenv("LASSOPRUNE_DATA", raising=False)
    monkeypatch.delenv("LASSOPRUNE_MIRROR", raising=False)
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


# --------------------------------------------------------------------------- pickles like Python 2 wrote them


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``str``/``bytes`` as protocol-2 STRING opcodes, like the official CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_string
    dispatch[bytes] = _save_py2_string


def py2_pickle(obj: Any) -> bytes:
    """Pickle ``obj`` as Python 2 + numpy 1.x did (``numpy.core.multiarray._reconstruct``)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


# --------------------------------------------------------------------------- CIFAR archives


def _cifar_batch(rng: np.random.Generator, n: int, label_key: str, num_classes: int) -> dict[str, Any]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    names = [f"f{i}.png" for i in range(n)]
    return {"batch_label": "testing batch", label_key: labels, "data": data, "filenames": names}


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def build_cifar(kind: str, seed: int = 0) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """Pickled files of a small CIFAR-10/100 folder and the dicts in them, keyed by file name."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        batches = {f"data_batch_{i}": _cifar_batch(rng, 3 + i, "labels", 10) for i in range(1, 6)}
        batches["test_batch"] = _cifar_batch(rng, 7, "labels", 10)
        batches["batches.meta"] = {"label_names": ["x"] * 10, "num_cases_per_batch": 10000, "num_vis": 3072}
    else:
        batches = {
            "train": _cifar_batch(rng, 11, "fine_labels", 100),
            "test": _cifar_batch(rng, 5, "fine_labels", 100),
        }
        for b in batches.values():
            b["coarse_labels"] = [0] * len(b["fine_labels"])
        fine = [f"fine{i}" for i in range(100)]
        batches["meta"] = {"fine_label_names": fine, "coarse_label_names": ["c"] * 20}
    return {name: py2_pickle(d) for name, d in batches.items()}, batches


CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_ARCHIVE = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


@pytest.fixture
def cifar_archive() -> Callable[[Path, str], dict[str, dict[str, Any]]]:
    """``make(dir, kind)`` writes ``dir/<official archive name>``; returns the batch dicts."""

    def make(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
        files, dicts = build_cifar(kind)
        directory.mkdir(parents=True, exist_ok=True)
        with tarfile.open(directory / CIFAR_ARCHIVE[kind], "w:gz") as tar:
            for name, payload in files.items():
                _add_member(tar, f"{CIFAR_FOLDER[kind]}/{name}", payload)
        return dicts

    return make


@pytest.fixture
def cifar_folder() -> Callable[[Path, str], dict[str, dict[str, Any]]]:
    """``make(dir, kind)`` writes the extracted ``dir/cifar-10-batches-py/``; returns the dicts."""

    def make(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
        files, dicts = build_cifar(kind)
        folder = directory / CIFAR_FOLDER[kind]
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in files.items():
            (folder / name).write_bytes(payload)
        return dicts

    return make


# --------------------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def idx_split() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``make(dir, prefix, n, gz=True, seed=0)`` writes one split's IDX files; returns (images, labels)."""

    def make(
        directory: Path, prefix: str, n: int, gz: bool = True, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        directory.mkdir(parents=True, exist_ok=True)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            payload = idx_bytes(array)
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (directory / name).write_bytes(payload)
        return images, labels

    return make


# --------------------------------------------------------------------------- HTTP


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served on ``http://127.0.0.1:<port>/``; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
