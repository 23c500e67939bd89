# rund-trio's recipes. Everything runs from the project's own virtualenv
# (.venv), which `just setup` creates; see README.md.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
python := venv / "bin/python"

# list the recipes
default:
    @just --list

# create .venv with the project and its development tools, and a development PKI in tls/
setup:
    test -x {{python}} || python3 -m venv {{venv}}
    # strict: a static link tree in build/, no import hook. The default editable
    # mode's hook costs every rund-trio process ~50 ms of start-up (measured);
    # a file added to the package needs `just setup` again (every recipe runs it).
    # libseccomp2: pyseccomp builds contained jobs' seccomp filter with it (ctypes)
    /sbin/ldconfig -p | grep -q 'libseccomp\.so\.2 ' || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp2 >/dev/null) || echo "warning: libseccomp2 could not be installed: contained jobs will be refused" >&2
    # constraints.txt pins every dependency (`just lock` refreshes it)
    {{python}} -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' --config-settings editable_mode=strict
    test -f tls/ca.pem || {{venv}}/bin/rund-trio certs --out tls

# what only the tests need: busybox-static, for the root filesystems of the isolation tests
test-deps:
    test -x /bin/busybox || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null) || echo "warning: busybox-static could not be installed: the root filesystem tests will skip" >&2
    # prometheus: the metrics test scrapes a daemon with a real Prometheus server
    test -x /usr/bin/prometheus || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) || echo "warning: prometheus could not be installed: the Prometheus scrape test will fail" >&2

# start a daemon on 127.0.0.1:PORT, run a job, follow its log, show its status, stop it, stop the daemon
demo PORT="8000": setup
    RUND_DEMO_PORT={{PORT}} scripts/demo.sh

# run the daemon in the foreground with the development PKI
serve *ARGS: setup
    {{venv}}/bin/rund-trio serve {{ARGS}}

# the whole test suite: lint and type checks, the host tests, then the kernel tier
test: test-host
    RUND_KERNEL_ALLOW_SKIP=1 scripts/test-kernel.sh

# lint, type checks, and the unit, integration and CLI tests on this host
test-host: setup test-deps lint
    {{python}} -m pytest -q

# the kernel tier: boot Debian's kernel under virtme-ng (no KVM) and run tests/kernel in it
# (exit 77 when this machine cannot boot the VM)
test-kernel *ARGS: setup test-deps
    scripts/test-kernel.sh {{ARGS}}

# benchmarks against a real daemon and OpenSSH on loopback, into bench/results/ (--quick: ~2 min)
bench *ARGS: setup
    {{python}} -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[bench]' --config-settings editable_mode=strict
    {{python}} -m bench {{ARGS}}

# the load test: 50 clients on a real daemon for 3 minutes (--duration SECONDS, --clients N, --help)
load *ARGS: setup
    {{python}} -m loadtest {{ARGS}}

# re-pin every dependency: resolve pyproject.toml's ranges in a fresh virtualenv into constraints.txt
lock:
    #!/usr/bin/env bash
    set -euo pipefail
    fresh=$(mktemp -d)
    trap 'rm -rf "$fresh"' EXIT
    python3 -m venv "$fresh"
    "$fresh/bin/pip" install -q --disable-pip-version-check '.[dev,bench]' rust-just
    { echo "# Every runtime, test and bench dependency, pinned: installed by \`just setup\` (pip -c)."
      echo "# Refresh with \`just lock\` (a fresh virtualenv, then pip freeze); commit the result."
      "$fresh/bin/pip" freeze --exclude rund-trio; } > constraints.txt
    echo "wrote constraints.txt"

# ruff and mypy
lint: setup
    {{venv}}/bin/ruff check rund_trio tests bench loadtest
    {{venv}}/bin/ruff format --check rund_trio tests bench loadtest
    {{venv}}/bin/mypy

# regenerate rund_trio/api/ from proto/rund.proto
proto: setup
    PATH={{venv}}/bin:$PATH scripts/gen_proto.sh
