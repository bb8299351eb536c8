"""Benchmarks behind ``cse bench``: each prints its figures and a JSON line last.

Modules: :mod:`.arbitrage` (detection throughput), :mod:`.broker` (the arbitrage worker
on a real broker against a bare consumer), :mod:`.allocate` (allocation solvers against
peer libraries), :mod:`.stack` (the embedded stack trading for minutes), :mod:`.data`
(synthetic covariances and returns, also used by the tests).
"""
