"""Mutual TLS for rund-trio: a development PKI, SSL contexts and peer identities.

* :mod:`rund_trio.tls.certs` -- generate a CA, a server and client certificates
* :mod:`rund_trio.tls.context` -- TLS 1.3-only server and client SSL contexts
* :mod:`rund_trio.tls.identity` -- the SAN-based identity of a peer

Submodules are imported on demand: importing this package is cheap.
"""
