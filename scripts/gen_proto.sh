#!/usr/bin/env bash
# Regenerates rund_trio/api/ from proto/rund.proto: protobuf messages with type
# stubs, and purerpc's service stubs. The output is committed, so running the
# project never needs the code generators; tests/test_proto_generated.py fails
# when the committed code is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-rund_trio/api}
python -m grpc_tools.protoc -I proto \
  --python_out="$out" --mypy_out="$out" --purerpc_out="$out" \
  proto/rund.proto
# protoc writes top-level imports; the generated modules live in a package.
sed -i 's/^import rund_pb2 as/from . import rund_pb2 as/' "$out/rund_grpc.py"
