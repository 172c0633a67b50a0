"""Benchmark: Transfer Studio's engine against the plain tutorial loop.

Run `python -m bench --help`. See the README's "Speed" section.
"""
