"""Run configs are checked before any compute: method options, targets and the calibration size."""

from __future__ import annotations

import pytest

from lassoprune.cli import main
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pipeline.config import parse_config


def _document(**prune) -> dict:
    return {"model": "resnet20", "data": {"name": "synthetic"}, "prune": {"method": "l1", "target_macs": 0.5, **prune}}


def test_calibration_smaller_than_the_class_count_fails_before_pretraining(tmp_path, capsys) -> None:
    with pytest.raises(LassopruneError, match=r"calib_size=3 is below the 10 classes"):
        parse_config(_document(calib_size=3))
    out = tmp_path / "run"
    code = main(["--quiet", "run", "--model", "resnet20", "--data", "synthetic", "--method", "l1",
                 "--target-macs", "0.5", "--set", "prune.calib_size=3", "--out", str(out)])
    assert code == 2 and "calib_size" in capsys.readouterr().err
    assert not (out / "pretrain").exists()


def test_method_options_and_targets_are_asked_of_the_method() -> None:
    assert parse_config(_document(method="sglp-ib", options={"pool": 2})).prune.options == {"pool": 2}
    with pytest.raises(UnknownNameError, match="l1 takes no options"):
        parse_config(_document(options={"pool": 2}))
    threshold_only = _document(method="dwgl-vote", options={"threshold": 0.1})
    del threshold_only["prune"]["target_macs"]
    assert parse_config(threshold_only).prune.options == {"threshold": 0.1}
    no_target = _document()
    del no_target["prune"]["target_macs"]
    with pytest.raises(LassopruneError, match="needs a target"):
        parse_config(no_target)
    with pytest.raises(UnknownNameError, match="valid allocations: global, uniform"):
        parse_config(_document(allocation="greedy"))
