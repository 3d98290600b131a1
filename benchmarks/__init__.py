"""Benchmark tooling: the scale-up data generator and the bare-parse baseline."""
