"""The daemon's operational surface: Prometheus metrics and the audit trail,
both fed by the gRPC layer's ``Observer`` calls and the supervisor's
``JobEvents``."""
