"""A load test of a real daemon on loopback: many clients running a mix of
Start, Status, Log and Stop, checking every byte every subscriber receives,
the daemon's errors, and its memory and descriptors after the load
(``just load``; ``python -m loadtest --help``)."""
