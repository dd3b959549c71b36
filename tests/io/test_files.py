"""Atomic writes, training checkpoints and model files: nothing lost, bad files rejected clearly."""

import pytest
import torch

import lassoprune as lp
from lassoprune.errors import CheckpointError
from lassoprune.io import atomic_write_text, load_checkpoint, read_model_file, save_checkpoint


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def exploding_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")  # half a file, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 3, "w": torch.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        load_checkpoint(path)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "obj": _Pickled()}, path)  # needs unpickling a class
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


class _Pickled:
    pass


def test_missing_key_and_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint({"epoch": 1}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        load_checkpoint(tmp_path / "c.pt", required=("epoch", "optimizer"))


def test_atomic_text_replaces_whole_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_text(path, "a" * 1000)
    atomic_write_text(path, "b")
    assert path.read_text() == "b"


def test_model_file_round_trip_same_logits(tmp_path):
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    path = tmp_path / "model.pt"
    lp.save(model, path, extra={"image_size": 32, "dataset": "fashion-mnist"})
    loaded = lp.load(path)
    assert loaded.lp_spec.name == "resnet20" and loaded.lp_spec.kwargs["num_classes"] == 7
    assert loaded.lp_extra == {"image_size": 32, "dataset": "fashion-mnist"}
    assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-lassoprune"])
def test_damaged_model_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "model.pt"
    lp.save(lp.create_model("resnet20"), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64 + data[64:])
    else:
        from safetensors.torch import save_file

        save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(CheckpointError):
        lp.load(path)
    with pytest.raises(CheckpointError):
        read_model_file(path)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
