"""Parsing ``host:port`` listen and dial addresses."""

from __future__ import annotations

from rund_trio.errors import ConfigError


def parse_address(text: str, *, default_host: str | None) -> tuple[str | None, int]:
    """Split ``host:port``, ``[v6]:port`` or ``:port`` (host omitted: ``default_host``).

    Raises ``ConfigError`` naming what is wrong.
    """
    host: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"address {text!r}: expected [IPv6 address]:port")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"address {text!r}: expected host:port")
        if ":" in host:
            raise ConfigError(f"address {text!r}: write IPv6 addresses as [address]:port")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"address {text!r}: the port must be a number from 0 to 65535")
    return (host or default_host), int(port_text)
