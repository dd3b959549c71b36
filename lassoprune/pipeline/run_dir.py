"""The run directory of a pipeline: which stages are finished, and with which config.

``RUN/state.json`` holds the resolved configuration and one record per
finished stage (its outputs and wall time). It is rewritten atomically after
every stage, so a run killed at any moment restarts at the first unfinished
stage; stages that train (pretrain, sparse, fine-tune) additionally resume
from their own last finished epoch (``RUN/STAGE/last.pt``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lassoprune.errors import CheckpointError
from lassoprune.io import atomic_write_json, atomic_write_text

STATE_NAME = "state.json"
CONFIG_NAME = "config.yaml"
STATE_SCHEMA = 1


class RunDirectory:
    """Finished stages and their records, persisted in ``root/state.json``."""

    def __init__(self, root: Path, config: dict[str, Any], stages: dict[str, dict[str, Any]]) -> None:
        self.root = root
        self.config = config
        self.stages = stages

    @classmethod
    def open(cls, root: str | Path, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> RunDirectory:
        """Create ``root`` for ``config``, or reopen it when it was started with the same config.

        ``defaults``: the config's default values; a key the stored config lacks (a run started before the
        key existed) counts as unchanged while ``config`` holds its default.

        Raises:
            CheckpointError: the directory holds a run of another config, or
                files that are not a run, or a damaged state file.
        """
        root = Path(root)
        state_file = root / STATE_NAME
        if state_file.exists():
            state = _read_state(state_file)
            changed = _changed_keys(state["config"], config, default=defaults)
            if changed:
                raise CheckpointError(
                    f"{root} holds a run started with another config (changed: {', '.join(changed)}); "
                    "rerun with the original config to resume it, or choose another output directory"
                )
            return cls(root, config, dict(state["stages"]))
        if root.exists() and any(root.iterdir()):
            raise CheckpointError(f"{root} is not empty and holds no {STATE_NAME}; choose another output directory")
        root.mkdir(parents=True, exist_ok=True)
        run = cls(root, config, {})
        atomic_write_text(root / CONFIG_NAME, _yaml(config))
        run.save()
        return run

    def is_done(self, stage: str) -> bool:
        return stage in self.stages

    def finish(self, stage: str, record: dict[str, Any]) -> None:
        """Mark ``stage`` finished with its record and persist the state."""
        self.stages[stage] = record
        self.save()

    def save(self) -> None:
        atomic_write_json(self.root / STATE_NAME,
                          {"schema": STATE_SCHEMA, "config": self.config, "stages": self.stages})

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); delete the run directory and start again") from exc
    if not isinstance(state, dict) or not {"config", "stages"} <= set(state):
        raise CheckpointError(f"{path} is not a lassoprune run state; choose another output directory")
    return state


def _changed_keys(old: Any, new: Any, prefix: str = "", default: Any = None) -> list[str]:
    """Dotted keys whose values differ between two nested mappings (keys ``old`` lacks, at ``default``, do not)."""
    if isinstance(old, dict) and isinstance(new, dict):
        default = default if isinstance(default, dict) else {}
        keys = sorted(set(old) | set(new))
        return [k for key in keys if not _added_at_default(key, old, new, default)
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.", default.get(key))]
    return [] if old == new else [prefix.rstrip(".")]


def _added_at_default(key: str, old: dict[str, Any], new: dict[str, Any], default: dict[str, Any]) -> bool:
    """A key newer than the stored config, set to its default (e.g. ``prune.steps: 1``)."""
    return key not in old and key in new and key in default and new[key] == default[key]


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
