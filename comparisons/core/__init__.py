"""The pure core: configs and seeds, the batched engine, paired runs, the reference cache, metrics,
LPIPS weights and visibility. Imports sampler_lib and comparisons.errors/files only."""
