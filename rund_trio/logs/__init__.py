"""A job's output: recorded from its pipes into an append-only journal file,
and followed from the beginning by any number of subscribers.

``journal`` is the sans-I/O part (record framing, output cap bookkeeping);
``recorder`` and ``follower`` are the thin trio layers over it.
"""
