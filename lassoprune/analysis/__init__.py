"""Model analysis: MACs and parameter counts (per layer)."""

from lassoprune.analysis.counting import CountResult, LayerCount, count, count_params

__all__ = ["CountResult", "LayerCount", "count", "count_params"]
