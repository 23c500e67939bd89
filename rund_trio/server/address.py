"""Kept importable for the daemon's modules: addresses live in ``rund_trio.address``
(shared by the client and the daemon)."""

from rund_trio.address import parse_address

__all__ = ["parse_address"]
