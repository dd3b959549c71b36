"""Small shared helpers (seeding, devices, logging)."""

from lassoprune.utils.runtime import default_device, epoch_seed, get_logger, seed_everything

__all__ = ["default_device", "epoch_seed", "get_logger", "seed_everything"]
