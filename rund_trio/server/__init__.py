"""The daemon: the gRPC service over jobs (served by ``rund_trio.rpc``), and
the process that hosts both."""
