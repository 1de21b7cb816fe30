"""Measurements on this machine: graph latency (interleaved runs) and per-layer timings."""
