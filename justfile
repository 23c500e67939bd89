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
    {{python}} -m pip install -q --disable-pip-version-check -e '.[dev]'
    test -f tls/ca.pem || {{venv}}/bin/rund-trio certs --out tls

# start a daemon, run a job, follow its log, show its status, stop it, stop the daemon
demo: setup
    scripts/demo.sh

# run the daemon in the foreground with the development PKI
serve *ARGS: setup
    {{venv}}/bin/rund-trio serve {{ARGS}}

# the whole test suite: lint, type checks, unit, integration and CLI tests
test: setup lint
    {{python}} -m pytest -q

# ruff and mypy
lint: setup
    {{venv}}/bin/ruff check rund_trio tests
    {{venv}}/bin/ruff format --check rund_trio tests
    {{venv}}/bin/mypy

# regenerate rund_trio/api/ from proto/rund.proto
proto: setup
    PATH={{venv}}/bin:$PATH scripts/gen_proto.sh
