#!/usr/bin/env bash
# Regenerates rund_trio/api/ from proto/: protobuf messages with type stubs,
# and purerpc's service stubs, for rund.proto and the standard gRPC health and
# reflection services. The output is committed, so running the project never
# needs the code generators; tests/interop/test_proto_compat.py fails when the
# committed code is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-rund_trio/api}
standard=(grpc_health/v1/health.proto grpc_reflection/v1/reflection.proto grpc_reflection/v1alpha/reflection.proto)
python -m grpc_tools.protoc -I proto \
  --python_out="$out" --mypy_out="$out" --purerpc_out="$out" \
  proto/rund.proto "${standard[@]/#/proto/}"
# protoc writes top-level imports; the generated modules live in a package.
sed -i 's/^import rund_pb2 as/from . import rund_pb2 as/' "$out/rund_grpc.py"
for file in "${standard[@]}"; do
  dir=$(dirname "$file")
  sed -i -E "s/^import ${dir//\//\\.}\.([a-z_]+_pb2) as/from . import \1 as/" "$out/${file%.proto}_grpc.py"
  touch "$out/${dir%%/*}/__init__.py" "$out/$dir/__init__.py"
done
