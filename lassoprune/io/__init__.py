"""Files lassoprune reads and writes: atomic writes, model files, training checkpoints."""

from lassoprune.io.atomic import atomic_path, atomic_write, atomic_write_json, atomic_write_text
from lassoprune.io.checkpoint import load_checkpoint, save_checkpoint
from lassoprune.io.model_file import ModelFile, load, read_model_file, save

__all__ = [
    "ModelFile",
    "atomic_path",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "load",
    "load_checkpoint",
    "read_model_file",
    "save",
    "save_checkpoint",
]
