"""herder's benchmarks: each runs herder and its anchor side by side and reports ratios."""
