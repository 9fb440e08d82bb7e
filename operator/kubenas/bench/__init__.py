"""Benchmarks that print figures: strategies on NAS-Bench-201, decision latency."""
