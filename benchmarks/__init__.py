"""Benchmarks and the load-and-fault command; each file runs as a script (see README)."""
