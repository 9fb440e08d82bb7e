"""Runtimes apply the engine's decisions: local processes, or a simulated clock for benchmarks."""
