"""Benchmarks (not tests): a load driver for the session WebSocket and a bare reference relay.

``python -m bench.run --all`` measures every scenario against the reference relay and the
real endpoint in the same invocation and writes docs/performance.md (see that page).
"""
