"""Benchmarks that print figures: latency and throughput, the paper's comparison."""
