"""Containing a job: namespaces, a root filesystem, credentials and its cgroup.

The daemon describes a job's process with an ``IsolationSpec``
(``rund_trio.isolation.spec``) and starts the ``rund-trio execute`` helper
(``rund_trio.isolation.execute``), which reads the spec, enters the job's
cgroup and new namespaces, prepares its filesystem and finally execs the job's
program. ``rund_trio.process.helper.HelperSpawner`` does the daemon's side.

This package's ``__init__`` imports nothing on purpose: the helper imports
``rund_trio.isolation.execute`` on every job start and must not pay for the
daemon's modules (not even ``dataclasses``).
"""
