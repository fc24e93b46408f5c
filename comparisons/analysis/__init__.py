"""Numbers from rows: statistics, per-cell verdicts, the leaderboard and charts. No SQLite, no files."""
