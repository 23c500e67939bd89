"""Encodings shared by the daemon and the client outside the gRPC layer:
JobLog messages by hand, malloc thresholds for stream buffers."""
