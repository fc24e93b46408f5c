"""Results on disk: the SQLite store, CSV export and campaign bundles."""
