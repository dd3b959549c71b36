"""``dwgl-vote``: remove the channels that the convs of a group vote out together.

After sparse training with DWGL (Zhan et al., "Directed-Weighting Group Lasso
for Eltwise Blocked CNN Pruning", BMVC 2019, arXiv:1910.09318) the convs of
an elementwise group have driven the same filters towards zero. Each voter
``l`` of a group (a producer conv; with ``vote_on="bn"`` a BatchNorm, for
network slimming, Liu et al. 2017) votes channel ``i`` out when its
relative strength is below ``tau``:

    r^l_i = ||W^l_i||_2 / max_j ||W^l_j||_2,      vote^l_i = [r^l_i < tau]

(``|gamma^l_i| / max_j |gamma^l_j|`` for BN voters; ``r = 0`` for an
all-zero layer). The group removes the channels with enough votes:

==================  ===========================================  ==========================
rule                removed when                                 statistic ``s_i``
==================  ===========================================  ==========================
``intersection``    every voter votes it out (default)           ``max_l r^l_i``
``union``           any voter votes it out                       ``min_l r^l_i``
``k-of-n``          at least ``k`` voters vote it out            ``k``-th smallest ``r^l_i``
==================  ===========================================  ==========================

i.e. channel ``i`` is removed iff ``s_i < tau``, so the removed set grows
monotonically with ``tau`` (``k`` is capped at the group's voter count, so
single-conv groups are plain thresholding). A group never keeps fewer than
its floor (``min_channels``): the channels with the largest ``s_i`` are
kept back. ``round_to`` only raises that floor here.

``tau`` is either given (``threshold=``) or, with a MACs / params target,
the smallest ``tau`` among the statistics' values (``tau <= 1``) whose
pruned network meets the target (at or below it: the removal sets change in
steps, so the result may undershoot the target).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lassoprune.channels import ChannelGroup, LayerSlice, SliceRole, slice_norms
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning.method import (
    Diagnostics,
    GroupDiagnostics,
    MethodContext,
    MethodOptions,
    MethodSpec,
    Selection,
    TargetUse,
    option,
    register_method,
)
from lassoprune.pruning.search import TARGET_TOLERANCE, SearchRecord, StrengthPath, Verdict, index_midpoint
from lassoprune.utils.enums import NamedEnum

VOTE_METHOD = "dwgl-vote"


class VoteRule(NamedEnum):
    """How a group's votes combine (module docstring's table)."""

    INTERSECTION = "intersection"
    UNION = "union"
    K_OF_N = "k-of-n"


class VoteSource(NamedEnum):
    """What votes: conv filter norms, or BatchNorm scales (network slimming)."""

    FILTERS = "filters"
    BN = "bn"


VOTE_RULES: tuple[str, ...] = tuple(r.value for r in VoteRule)


@dataclass(frozen=True)
class VoteOptions(MethodOptions):
    """The options of ``dwgl-vote`` (extra keyword arguments of :func:`lassoprune.prune`).

    Attributes:
        threshold: ``tau`` in (0, 1]; None = searched for the target.
        vote: ``intersection``, ``union`` or ``k-of-n``.
        vote_k: ``k`` for ``k-of-n`` (>= 1).
        vote_on: ``filters`` (conv filter norms) or ``bn`` (BatchNorm ``|gamma|``).
    """

    threshold: float | None = option(None, "tau in (0, 1]: vote out channels below tau x the layer's strongest "
                                           "(instead of a target)")
    vote: VoteRule | str = option(VoteRule.INTERSECTION, "how a group's votes combine: intersection | union | k-of-n")
    vote_k: int | None = option(None, "k of k-of-n: voters that must agree (>= 1)")
    vote_on: VoteSource | str = option(VoteSource.FILTERS, "what votes: filters (conv filter norms) | bn (|gamma|)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, method: str = VOTE_METHOD) -> None:
        if self.threshold is not None and not (0.0 < self.threshold <= 1.0 and math.isfinite(self.threshold)):
            raise LassopruneError(f"the vote threshold tau must lie in (0, 1], got {self.threshold}")
        object.__setattr__(self, "vote", VoteRule.parse(self.vote))
        object.__setattr__(self, "vote_on", VoteSource.parse(self.vote_on))
        if self.vote is VoteRule.K_OF_N and (self.vote_k is None or self.vote_k < 1):
            raise LassopruneError(
                f"vote 'k-of-n' needs vote_k >= 1, the voters that must agree, got {self.vote_k}"
            )
        if self.vote is not VoteRule.K_OF_N and self.vote_k is not None:
            raise LassopruneError(f"vote_k only applies to vote 'k-of-n', not '{self.vote}'")

    def replaces_target(self) -> bool:
        return self.threshold is not None


def required_votes(rule: str, num_voters: int, k: int | None = None) -> int:
    """How many of ``num_voters`` must vote a channel out under ``rule`` (``k`` capped at ``num_voters``)."""
    if rule == VoteRule.INTERSECTION:
        return num_voters
    if rule == VoteRule.UNION:
        return 1
    if rule == VoteRule.K_OF_N:
        if k is None or k < 1:
            raise LassopruneError(f"vote 'k-of-n' needs k >= 1, got {k}")
        return min(k, num_voters)
    raise UnknownNameError("vote rule", rule, VOTE_RULES)


def combine_votes(votes: Tensor, rule: str = "intersection", k: int | None = None) -> Tensor:
    """The channels a group removes, from its voters' votes.

    Args:
        votes: bool ``(n_voters, C)``, ``votes[l, i]``: voter ``l`` votes channel ``i`` out.
        rule: ``intersection``, ``union`` or ``k-of-n``.
        k: for ``k-of-n``.

    Returns:
        bool ``(C,)``: removed channels.
    """
    return votes.sum(0) >= required_votes(rule, votes.shape[0], k)


def removal_statistic(ratios: Tensor, rule: str = "intersection", k: int | None = None) -> Tensor:
    """``s_i`` with ``removed_i = [s_i < tau]`` for every ``tau`` (the module docstring's table).

    Args:
        ratios: ``(n_voters, C)`` relative strengths ``r^l_i`` in [0, 1].

    Returns:
        ``(C,)``: the ``m``-th smallest ratio of each channel, ``m`` = :func:`required_votes`.
    """
    m = required_votes(rule, ratios.shape[0], k)
    return ratios.sort(dim=0).values[m - 1]


def relative_strengths(norms: Tensor) -> Tensor:
    """``r_i = n_i / max_j n_j`` (all zeros when every ``n_j = 0``); any shape ``(C,)``."""
    top = norms.max()
    return norms / top if top > 0 else torch.zeros_like(norms)


def voters(group: ChannelGroup, modules: Mapping[str, nn.Module], vote_on: str = "filters") -> tuple[LayerSlice, ...]:
    """The slices that vote: producer filters, or the BN scales (falls back to producers without BN)."""
    if vote_on == "bn":
        norms = tuple(s for s in group.norms if isinstance(getattr(modules[s.module], "weight", None), Tensor))
        if norms:
            return norms
    return tuple(s for s in group.producers if s.role is SliceRole.OUT)


def group_ratios(
    group: ChannelGroup, modules: Mapping[str, nn.Module], vote_on: str = "filters"
) -> tuple[tuple[str, ...], Tensor]:
    """Voter names and their ``(n_voters, C)`` relative strengths ``r^l_i`` (group-channel order)."""
    members = voters(group, modules, vote_on)
    with torch.no_grad():
        rows = [relative_strengths(slice_norms(modules[s.module], s, 2, group.num_channels).double().cpu())
                for s in members]
    return tuple(s.module for s in members), torch.stack(rows)


def keep_mask(statistic: Tensor, tau: float, floor: int) -> Tensor:
    """bool ``(C,)``: channels with ``s_i >= tau``, topped up with the largest ``s_i`` to ``floor``."""
    keep = statistic >= tau
    missing = floor - int(keep.sum())
    if missing > 0:
        order = torch.argsort(torch.where(keep, -math.inf, statistic), descending=True, stable=True)
        keep[order[:missing]] = True
    return keep


@dataclass(frozen=True)
class _GroupVotes:
    group: ChannelGroup
    names: tuple[str, ...]
    ratios: Tensor  # (n_voters, C)
    statistic: Tensor  # (C,)
    floor: int


def collect_votes(ctx: MethodContext, opts: VoteOptions) -> list[_GroupVotes]:
    """Every group's voters, their relative strengths and the removal statistic (``ctx.analysis.groups`` order)."""
    modules = dict(ctx.model.named_modules())
    out = []
    for group, floor in zip(ctx.analysis.groups, ctx.floors):
        names, ratios = group_ratios(group, modules, opts.vote_on)
        statistic = removal_statistic(ratios, opts.vote, opts.vote_k)
        out.append(_GroupVotes(group, names, ratios, statistic, int(floor)))
    return out


def keep_all(votes: Sequence[_GroupVotes], tau: float) -> dict[str, Tensor]:
    """group id -> bool ``(C,)`` kept channels at threshold ``tau`` (floors respected)."""
    return {v.group.id: keep_mask(v.statistic, tau, v.floor) for v in votes}


def _cost(ctx: MethodContext, keep: Mapping[str, Tensor]) -> int:
    counts = ctx.cost_model.keep_vector({gid: int(mask.sum()) for gid, mask in keep.items()})
    return ctx.target.cost(ctx.cost_model, counts)


def search_tau(ctx: MethodContext, votes: Sequence[_GroupVotes], check: bool = True) -> SearchRecord:
    """The smallest candidate ``tau <= 1`` whose pruned cost meets ``ctx.target`` (bisection; cost falls with tau).

    The candidates are the statistics' values in (0, 1] and 1; a candidate meets the target at or
    below it. ``check``: refuse, with the reason, a vote whose all-zero channels alone remove more
    than the target.

    Returns:
        The :class:`SearchRecord` (``value``: tau; ``steps``: each tau tried and its cost ratio).
    """
    values = torch.cat([v.statistic for v in votes])
    candidates = sorted(set(torch.unique(values[(values > 0) & (values <= 1)]).tolist()) | {1.0})
    budget = ctx.target.ratio * ctx.target.full(ctx.cost_model)
    path: StrengthPath[int, dict[str, Tensor]] = StrengthPath(
        lambda index: keep_all(votes, candidates[index]), lambda keep: _cost(ctx, keep),
        lambda cost: Verdict.KEEPS_TOO_MUCH if cost > budget else Verdict.KEEPS_TOO_LITTLE,
        ctx.target.full(ctx.cost_model), value_of=lambda index: candidates[index])
    last = len(candidates) - 1
    if path.verdict(last) is Verdict.KEEPS_TOO_MUCH:
        reachable = path.at(last)[1] / ctx.target.full(ctx.cost_model)
        raise LassopruneError(
            f"target_{ctx.target.kind}={ctx.target.ratio} is unreachable by voting: even tau = 1 keeps "
            f"{reachable:.4f} of the {ctx.target.kind} (sparse-train longer / with a larger lam, or use vote union)"
        )
    if check:
        _check_zeros(ctx, votes)
    # index -1 stands for "no threshold" (keeps too much); the last candidate meets the budget
    found = path.bisect(over=-1, under=last, midpoint=index_midpoint, max_steps=len(candidates))
    return path.record("tau", found.under)


def _check_zeros(ctx: MethodContext, votes: Sequence[_GroupVotes]) -> None:
    """A clear error when the channels that are zero in every voter (removed by any vote) alone keep less than
    the target minus :data:`TARGET_TOLERANCE` (a coarse last step is only warned about, by the prune path)."""
    full = ctx.target.full(ctx.cost_model)
    kept = _cost(ctx, keep_all(votes, float(torch.finfo(torch.float64).tiny))) / full
    if kept >= ctx.target.ratio - TARGET_TOLERANCE:
        return
    zeros = sum(int((v.statistic == 0).sum()) for v in votes)
    raise LassopruneError(
        f"dwgl-vote cannot give target_{ctx.target.kind}={ctx.target.ratio}: {zeros} channels are exactly zero in "
        f"every voter and go together, so the smallest vote keeps {kept:.4f} of the {ctx.target.kind}. Sparse-train "
        f"towards the target (lassoprune sparse-train --target-{ctx.target.kind}, or a run with sparse: and a "
        f"prune target), or with a smaller lam, or ask for target_{ctx.target.kind}<={kept:.4f}"
    )


def _group_report(v: _GroupVotes, tau: float, keep: Tensor) -> tuple[GroupDiagnostics, dict[str, list[int]]]:
    votes = v.ratios < tau
    voted = {name: torch.nonzero(row).flatten().tolist() for name, row in zip(v.names, votes)}
    counts = {
        "votes": {name: len(channels) for name, channels in voted.items()},
        "intersection": int(votes.all(0).sum()),
        "union": int(votes.any(0).sum()),
        "removed": int((~keep).sum()),
    }
    note = f"votes: all {counts['intersection']}, any {counts['union']}"
    return GroupDiagnostics(note=note, values=counts), voted


def _eltwise_summary(votes: Sequence[_GroupVotes], groups: Mapping[str, GroupDiagnostics]) -> dict[str, Any]:
    """The residual (eltwise) groups' vote counts: how many channels every / any voter voted out, and removed."""
    eltwise = [v.group for v in votes if v.group.is_eltwise]
    channels = sum(g.num_channels for g in eltwise)
    total = {key: sum(groups[g.id].values[key] for g in eltwise) for key in ("intersection", "union", "removed")}
    return {"groups": len(eltwise), "channels": channels, **total,
            "removed_fraction": total["removed"] / channels if channels else 0.0}


def dwgl_vote(ctx: MethodContext) -> Selection:
    """Keep sets of ``dwgl-vote`` (see the module docstring); ``ctx.options``: :class:`VoteOptions`."""
    opts: VoteOptions = ctx.options
    votes = collect_votes(ctx, opts)
    searched = opts.threshold is None
    search = search_tau(ctx, votes) if searched else SearchRecord("tau", float(opts.threshold), searched=False)
    tau = search.value
    keep = keep_all(votes, tau)
    groups, voted = {}, {}
    for v in votes:
        groups[v.group.id], voted[v.group.id] = _group_report(v, tau, keep[v.group.id])
    diagnostics = Diagnostics(
        groups=groups, search=search,
        settings={"vote": opts.vote.value, "vote_k": opts.vote_k, "vote_on": opts.vote_on.value},
        record={"tau": tau, "vote": opts.vote.value, "vote_on": opts.vote_on.value},
        extra={"voted": voted, "eltwise": _eltwise_summary(votes, groups)},
    )
    return Selection(
        keep={gid: tuple(torch.nonzero(mask).flatten().tolist()) for gid, mask in keep.items()},
        scores={v.group.id: v.statistic for v in votes},  # float64 (C,): removed iff < tau
        diagnostics=diagnostics,
    )


register_method(MethodSpec(
    name=VOTE_METHOD, run=dwgl_vote, options=VoteOptions, decides_widths=True, rounds_widths=False,
    target=TargetUse.OR_THRESHOLD,
    summary="removes the channels every conv of a group votes out (after DWGL sparse training)",
))
