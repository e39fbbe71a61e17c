#!/usr/bin/env bash
# Regenerates the Python gRPC modules of containerd's snapshots API in this directory.
#
# The .proto files come from Debian's golang-github-containerd-containerd-dev (fetched and extracted by
# ci/containerd-go-debs with a private apt configuration; nothing is installed system-wide). strip_gogo.py
# drops the gogoproto options (Go-only; the wire format is unchanged) and points the imports at this
# package; grpcio-tools (pip install grpcio-tools) generates mount_pb2.py, snapshots_pb2.py and
# snapshots_pb2_grpc.py.
#
# usage: graphdriver/serve/proto/regenerate.sh [GOPATH_ROOT]   (default: what ci/containerd-go-debs prints)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
gopath_root=${1:-$("$repo/ci/containerd-go-debs")}
api=$gopath_root/usr/share/gocode/src/github.com/containerd/containerd/api
[ -f "$api/services/snapshots/v1/snapshots.proto" ] || { echo "regenerate.sh: no containerd API under $api" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=graphdriver/serve/proto
mkdir -p "$work/$pkg"
"$py" "$here/strip_gogo.py" "$api/types/mount.proto" "$work/$pkg/mount.proto"
"$py" "$here/strip_gogo.py" "$api/services/snapshots/v1/snapshots.proto" "$work/$pkg/snapshots.proto" \
  "github.com/containerd/containerd/api/types/mount.proto=$pkg/mount.proto"
"$py" -m grpc_tools.protoc -I "$work" --python_out="$work" --grpc_python_out="$work" --pyi_out="$work" \
  "$work/$pkg/mount.proto" "$work/$pkg/snapshots.proto"
cp "$work/$pkg/mount.proto" "$work/$pkg/snapshots.proto" "$here/"
cp "$work/$pkg"/*_pb2*.py* "$here/"
rm -f "$here/mount_pb2_grpc.py"   # mount.proto declares no service
echo "regenerated: $(cd "$here" && ls ./*_pb2*.py* | tr '\n' ' ')"
