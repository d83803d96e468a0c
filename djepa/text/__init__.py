"""Text as a condition: the embedded caption data (pairs.py) and its domain metrics (pair_metrics.py)."""
