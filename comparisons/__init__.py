"""comparisons: paired runs, metrics, the results store, statistics, export and the CLI (no UI code)."""
from .config import PAIRINGS, ConfigError, SamplerConfig, make_pair
from .store import DuplicateVote, ResultsStore, StoreError

__all__ = ["PAIRINGS", "ConfigError", "DuplicateVote", "ResultsStore", "SamplerConfig", "StoreError",
           "make_pair"]
