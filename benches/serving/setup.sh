#!/usr/bin/env bash
# Installs what benches/serving/ needs, idempotently:
#
#   bash benches/serving/setup.sh              # venv in benches/serving/.venv
#   VENV=/tmp/serving-venv bash benches/serving/setup.sh
#
# * Debian packages: libb64-0d (perf_analyzer links it) and stress-ng (the
#   antagonist), each installed only if missing.
# * A virtualenv with tritonclient 2.41.0 (the last release whose wheel ships
#   perf_analyzer and runs on glibc 2.36), KServe's Python ModelServer,
#   onnxruntime, and nvidia-cuda-runtime-cu12 for the libcudart.so.12 that
#   perf_analyzer links even without a GPU.
# * env.sh next to this script: sourcing it puts the venv's bin first on PATH
#   and the CUDA runtime wheel's lib directory on LD_LIBRARY_PATH, so that
#   `perf_analyzer` starts. run.py computes the same by itself.
#
# Ends by checking that perf_analyzer prints "Perf Analyzer Version 2.41.0".
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-$HERE/.venv}

# Pinned: the versions this benchmark was made to work with.
PIP_PINS=(
    "tritonclient[http,grpc]==2.41.0"
    "kserve==0.21.0"
    "onnxruntime==1.32.0"
    "onnx==1.23.2"
    "numpy==2.4.6"
    "nvidia-cuda-runtime-cu12==12.9.79"
)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need=()
dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q 'install ok installed' \
    || need+=(libb64-0d)
command -v stress-ng >/dev/null 2>&1 || need+=(stress-ng)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -m pip freeze 2>/dev/null | grep -qx 'kserve==0.21.0' \
    || ! "$VENV/bin/python" -m pip freeze 2>/dev/null | grep -qx 'tritonclient==2.41.0'; then
    echo "setup: pip install into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_PINS[@]}"
fi

CUDART_LIB=$("$VENV/bin/python" - <<'EOF'
import os, nvidia.cuda_runtime as m
print(os.path.join(list(m.__path__)[0], "lib"))
EOF
)
[ -e "$CUDART_LIB/libcudart.so.12" ] || { echo "setup: no libcudart.so.12 in $CUDART_LIB" >&2; exit 1; }

cat >"$HERE/env.sh" <<EOF
# Made by setup.sh: source it to run perf_analyzer and the venv's python by hand.
export PATH="$VENV/bin:\$PATH"
export LD_LIBRARY_PATH="$CUDART_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF

version=$(LD_LIBRARY_PATH="$CUDART_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$VENV/bin/perf_analyzer" --version 2>&1 || true)
if ! grep -q "Perf Analyzer Version 2.41.0" <<<"$version"; then
    echo "setup: perf_analyzer did not start:" >&2
    echo "$version" >&2
    exit 1
fi
# Two processes: kserve and tritonclient.grpc each register the package
# `inference` in protobuf's default pool, so they cannot share one interpreter
# (peer.py imports only kserve, load.py only tritonclient).
"$VENV/bin/python" -c 'import kserve, onnxruntime' >/dev/null 2>&1 \
    || { echo "setup: kserve or onnxruntime does not import" >&2; exit 1; }
"$VENV/bin/python" -c 'import tritonclient.grpc, tritonclient.http' >/dev/null 2>&1 \
    || { echo "setup: tritonclient does not import" >&2; exit 1; }
echo "setup: ok: $(head -n1 <<<"$version"), venv $VENV, env in $HERE/env.sh"
