"""User-facing errors.

Every error that a user can cause with bad input (an unknown name, missing data,
a damaged file) derives from :class:`LassopruneError`. The command line prints
the message of such an error without a traceback and exits with status 2, so
the message must say what went wrong *and* what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable


class LassopruneError(Exception):
    """Base class of the errors caused by user input; the message is shown as is."""


class UnknownNameError(LassopruneError, KeyError):
    """A name (model, dataset, method, ...) that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class UnknownOptionError(UnknownNameError):
    """An option that a method (or another plug-in) does not have; the message lists the ones it has."""

    def __init__(self, owner: str, name: str, valid: Iterable[str]) -> None:
        self.kind, self.name, self.valid = f"{owner} option", name, list(valid)
        has = f"valid {owner} options: {', '.join(self.valid)}" if self.valid else f"{owner} takes no options"
        LassopruneError.__init__(self, f"unknown {owner} option {name!r}; {has}")


class DuplicateNameError(LassopruneError, ValueError):
    """A name registered twice (a model, dataset, method, ... plug-in that would shadow another)."""


class UnreachableTargetError(LassopruneError, ValueError):
    """A MACs / parameter target below what the channel floors (min_channels, round_to, kept groups) allow."""


class ModelConfigError(LassopruneError, ValueError):
    """A model option or model spec that is out of range or malformed."""


class DataNotFoundError(LassopruneError, FileNotFoundError):
    """Dataset files are missing and could not be downloaded."""


class IntegrityError(LassopruneError):
    """A downloaded or stored file does not match its expected checksum or format."""


class CheckpointError(LassopruneError):
    """A checkpoint or model file is missing, truncated, corrupted or incompatible."""
