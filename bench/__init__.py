"""`make bench`: cold starts and first requests as Lambda pays them, the layer's size, and the
connection test's and mail routes' latency, in one table (docs/benchmarks.md).

Imports nothing: `bench/lambda_probe.py` runs in fresh interpreters of the runtime's Python,
whose every import is measured.
"""
