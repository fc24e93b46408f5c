"""comparisons: the layers below the app (docs/ARCHITECTURE.md) — core (configs, the engine, metrics), results
(the store, CSV, bundles), analysis (statistics), workflows (studies, campaigns, the Lab facade), specs and
the CLI. No UI code."""
from .core.config import PAIRINGS, SamplerConfig, make_pair
from .errors import ConfigError, DuplicateVote, StoreError
from .results.store import ResultsStore

__all__ = ["PAIRINGS", "ConfigError", "DuplicateVote", "ResultsStore", "SamplerConfig", "StoreError",
           "make_pair"]
