"""`make bench`: measurements written to bench/results.md and bench/results.json."""
