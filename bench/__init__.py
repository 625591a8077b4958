"""`make bench`: cold starts, the layer's size and connection-test latency, in one table.

Imports nothing: `python -m mailbridge_bench.probe` runs in fresh interpreters whose every
import is measured.
"""
