#!/usr/bin/env bash
# Regenerate the Python messages of Fluster's protocol (src/hatchway/fluster/proto/cluster_pb2.py, and its typed
# stub cluster_pb2.pyi) from cluster.proto, with the protoc that grpcio-tools ships and mypy-protobuf's plugin
# (both dev dependencies: scripts/setup.sh --dev). The generated files are committed; run this after changing the
# .proto, then commit all three.
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
plugin=.venv/bin/protoc-gen-mypy
"$python" -c 'import grpc_tools.protoc' 2>/dev/null || { echo "grpcio-tools is missing: scripts/setup.sh --dev" >&2; exit 1; }
[ -x "$plugin" ] || { echo "mypy-protobuf is missing: scripts/setup.sh --dev" >&2; exit 1; }

# -I src: the descriptor is registered as hatchway/fluster/proto/cluster.proto, a name no other file shares.
"$python" -m grpc_tools.protoc -I src \
  --python_out=src --plugin=protoc-gen-mypy="$plugin" --mypy_out=src \
  src/hatchway/fluster/proto/cluster.proto
echo "generated src/hatchway/fluster/proto/cluster_pb2.py and cluster_pb2.pyi"
