"""Scripted arbitrage scenarios: ``cse scenario run FILE``.

* :mod:`.spec`    the file format (documented there) and its validation;
* :mod:`.runner`  the real processes on free ports, the books played, the outcome collected;
* :mod:`.measure` the outcome measured from the venues' own records, and the checks.

From Python (tests): ``tooling.scenario.runner.run_file(path)`` returns the exit code and
the JSON summary.
"""
