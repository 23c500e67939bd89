"""rund-trio's benchmark harness: ``python -m bench [--quick]``.

Runs a real ``rund-trio serve`` subprocess over mutual TLS on loopback, drives
it with ``RundClient`` and the CLI, measures the machine's floor (posix_spawn,
a local pipe) and OpenSSH on loopback side by side, and prints one table
(also ``bench/results/results.json`` and ``bench/results/chart.png``).

A script, not a test: nothing here passes or fails; each figure is printed
beside the target from issue 5 and its counterpart.
"""
