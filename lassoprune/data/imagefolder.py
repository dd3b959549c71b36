"""Image files sorted into one folder per class (ImageNet style).

Layout: ``root/<split>/<class>/**/*.jpg|png|...`` where the test split may be
called ``test`` or ``val``; a folder with no split folders,
``root/<class>/...``, serves every split. Class indices follow the sorted
class-folder names of all splits together, so train and test agree.

Images are decoded with PIL when a batch is asked for: converted to RGB, the
shorter side resized to ``resize`` (bilinear), then centre-cropped to
``image_size``. Batches are decoded on a small thread pool (PIL releases the
GIL while decoding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lassoprune.data._registry import (
    DatasetEntry,
    DatasetInfo,
    PathLike,
    as_index_tensor,
    register_dataset,
)
from lassoprune.data.augment import Augment
from lassoprune.errors import DataNotFoundError, IntegrityError, LassopruneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})
_SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "val")}
_LAYOUT_HINT = (
    "expected DIR/train/<class>/*.jpg (and DIR/val or DIR/test), or DIR/<class>/*.jpg; "
    "pass root=DIR"
)


# --------------------------------------------------------------------------- decoding


def load_image(path: Path, resize: int, crop: int) -> Tensor:
    """Decode ``path``, scale its shorter side to ``resize`` and centre-crop ``crop x crop``.

    Returns:
        uint8 ``(3, crop, crop)``.
    """
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise IntegrityError(f"cannot decode image {path} ({exc}); remove or replace the file") from exc
    w, h = rgb.size
    scale = resize / min(w, h)
    new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
    rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    rgb = rgb.crop((left, top, left + crop, top + crop))
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.reshape(crop, crop, 3).permute(2, 0, 1).contiguous()


class ImageFolderDataset:
    """Image files decoded on demand; same protocol as :class:`ImageDataset`.

    Args:
        paths: one file per sample.
        labels: int64 ``(N,)``.
        info: description; ``info.image_size`` is the crop size.
        resize: shorter side before the centre crop (``>= info.image_size``).
        num_workers: decoding threads per batch; 0 or 1 decodes in the caller.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Tensor,
        info: DatasetInfo,
        resize: int = 256,
        num_workers: int = 0,
    ) -> None:
        if resize < info.image_size:
            raise LassopruneError(f"resize ({resize}) must be >= image_size ({info.image_size})")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (len(paths),):
            raise ValueError(f"{len(paths)} paths but labels of shape {tuple(labels.shape)}")
        self._paths = tuple(paths)
        self._labels = labels
        self._info = info
        self.resize = resize
        self.num_workers = num_workers

    @property
    def info(self) -> DatasetInfo:
        return self._info

    @property
    def labels(self) -> Tensor:
        """All labels, int64 ``(N,)``."""
        return self._labels

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image file of each sample."""
        return self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        info = self._info
        return f"ImageFolderDataset(n={len(self)}, classes={info.num_classes}, size={info.image_size})"

    def get_batch(self, indices: Tensor) -> Tensor:
        """Decode the images at ``indices`` (int64 ``(B,)``) to uint8 ``(B, 3, S, S)``."""
        idx = as_index_tensor(indices, len(self)).tolist()
        size = self._info.image_size
        if not idx:
            return torch.empty(0, 3, size, size, dtype=torch.uint8)
        paths = [self._paths[i] for i in idx]
        if self.num_workers <= 1 or len(paths) == 1:
            return torch.stack([load_image(p, self.resize, size) for p in paths])
        with ThreadPoolExecutor(max_workers=min(self.num_workers, len(paths))) as pool:
            return torch.stack(list(pool.map(lambda p: load_image(p, self.resize, size), paths)))

    def subset(self, indices: Tensor) -> ImageFolderDataset:
        """The samples at ``indices`` (int64 ``(M,)``), same decoding settings."""
        idx = as_index_tensor(indices, len(self))
        paths = [self._paths[i] for i in idx.tolist()]
        return ImageFolderDataset(paths, self._labels[idx], self._info, self.resize, self.num_workers)


# --------------------------------------------------------------------------- scanning


def _root_dir(root: PathLike | None) -> Path:
    """``root`` as an existing folder, else :class:`DataNotFoundError` with the layout."""
    if root is None:
        raise DataNotFoundError(f"the imagefolder dataset needs a data folder; {_LAYOUT_HINT}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"imagefolder root {path} is not a folder; {_LAYOUT_HINT}")
    return path


def _existing_split_folders(root: Path) -> list[Path]:
    """The split folders (``train``, ``test``, ``val``) present under ``root``."""
    names = dict.fromkeys(n for names in _SPLIT_FOLDERS.values() for n in names)
    return [root / n for n in names if (root / n).is_dir()]


def split_folder(root: Path, split: str) -> Path:
    """The folder holding the classes of ``split``; ``root`` itself for the flat layout."""
    for name in _SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    if _existing_split_folders(root):
        looked = ", ".join(str(root / n) for n in _SPLIT_FOLDERS[split])
        raise DataNotFoundError(f"no {split} split in {root}: looked for {looked}; {_LAYOUT_HINT}")
    return root


def _class_folders(folder: Path) -> list[str]:
    """Names of the non-hidden sub-folders of ``folder``."""
    return [d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]


def find_classes(root: Path) -> tuple[str, ...]:
    """Sorted class names over all split folders (or ``root``'s sub-folders)."""
    folders = _existing_split_folders(root) or [root]
    names = sorted({name for folder in folders for name in _class_folders(folder)})
    if not names:
        raise DataNotFoundError(f"no class folders in {root}; {_LAYOUT_HINT}")
    return tuple(names)


def scan_images(folder: Path, classes: Sequence[str]) -> tuple[list[Path], Tensor]:
    """Image files under ``folder/<class>/`` in sorted order.

    Returns:
        The paths and their labels, int64 ``(N,)``.
    """
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        candidates = (folder / name).rglob("*")
        files = sorted(p for p in candidates if p.suffix.lower() in EXTENSIONS and p.is_file())
        paths += files
        labels += [label] * len(files)
    if not paths:
        kinds = ", ".join(sorted(EXTENSIONS))
        raise DataNotFoundError(f"no images ({kinds}) under {folder}/<class>/; {_LAYOUT_HINT}")
    return paths, torch.tensor(labels, dtype=torch.int64)


# --------------------------------------------------------------------------- entry points


def imagefolder_info(
    *,
    root: PathLike | None = None,
    image_size: int = 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DatasetInfo:
    """Description derived from the folder ``root``: its classes, RGB, ``image_size``.

    ``mean``/``std`` default to the ImageNet statistics.
    """
    path = _root_dir(root)
    classes = find_classes(path)
    return DatasetInfo(
        name="imagefolder",
        num_classes=len(classes),
        class_names=classes,
        in_channels=3,
        image_size=image_size,
        mean=tuple(IMAGENET_MEAN if mean is None else mean),
        std=tuple(IMAGENET_STD if std is None else std),
    )


def load_imagefolder(
    *,
    root: PathLike | None,
    split: str,
    download: bool,
    image_size: int = 224,
    resize: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_workers: int | None = None,
) -> ImageFolderDataset:
    """Index the files of ``split`` under ``root`` (``download`` is ignored).

    Args:
        image_size: side of the centre crop.
        resize: shorter side before cropping.
        mean, std: per-channel statistics; ImageNet's by default.
        num_workers: decoding threads; default ``min(8, cpu count)``.
    """
    info = imagefolder_info(root=root, image_size=image_size, mean=mean, std=std)
    folder = split_folder(_root_dir(root), split)
    paths, labels = scan_images(folder, info.class_names)
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    return ImageFolderDataset(paths, labels, info, resize=resize, num_workers=workers)


register_dataset(
    DatasetEntry(
        name="imagefolder",
        load=load_imagefolder,
        info=imagefolder_info,
        augment=Augment(crop_padding=16, flip=True),
        summary="image files in DIR/{train,val}/<class>/ (ImageNet style); needs its root folder",
    )
)
