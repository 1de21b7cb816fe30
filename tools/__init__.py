"""Scripts of the repository (not installed): examples/ (the demo and walk-throughs), benchmarks/ (figures
for BENCHMARKS.md), dev/ (test-data generators); common.py holds what the scripts share."""
