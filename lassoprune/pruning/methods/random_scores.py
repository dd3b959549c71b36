"""``random``: uniform channel scores, the baseline every criterion must beat."""

from __future__ import annotations

import zlib

import torch
from torch import Tensor

from lassoprune.channels import ChannelGroup
from lassoprune.pruning.criteria import ScoreContext, register_criterion


@register_criterion("random", summary="uniform random scores, seeded (the baseline)")
def random_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c ~ U[0, 1)``, reproducible: the generator is seeded with ``crc32(f"{seed}:{group.id}")``.

    The same (seed, group) always gives the same scores, on any platform and
    Python process (``crc32``, unlike ``hash()``, is not salted).
    """
    generator = torch.Generator().manual_seed(zlib.crc32(f"{ctx.seed}:{group.id}".encode()))
    return torch.rand(group.num_channels, generator=generator, dtype=torch.float64)
