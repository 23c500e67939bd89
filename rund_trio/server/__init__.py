"""The daemon: the gRPC service over jobs, its transport, and the process that
hosts both."""
