"""PrivFed benchmarks: ratios measured side by side in one run; results in benchmarks/results/."""
