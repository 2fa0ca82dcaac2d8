"""What the serving benchmark's scripts share: paths, the machine's
description, the environment perf_analyzer needs, percentiles and free ports.

Standard library only, so that run.py works under any python3 while peer.py
and load.py run in the virtualenv that setup.sh makes.
"""

from __future__ import annotations

import glob
import math
import os
import platform
import socket

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def venv_dir() -> str:
    """The virtualenv setup.sh made: $VENV, else benches/serving/.venv."""
    return os.environ.get("VENV") or os.path.join(HERE, ".venv")


def venv_python() -> str:
    return os.path.join(venv_dir(), "bin", "python")


def perf_analyzer_path() -> str:
    """perf_analyzer as the tritonclient 2.41.0 wheel installs it."""
    return os.path.join(venv_dir(), "bin", "perf_analyzer")


def cudart_lib_dir() -> str | None:
    """The lib directory of the nvidia-cuda-runtime-cu12 wheel in the venv
    (holds the libcudart.so.12 perf_analyzer links), or None."""
    pattern = os.path.join(venv_dir(), "lib", "python3*", "site-packages",
                           "nvidia", "cuda_runtime", "lib", "libcudart.so.12")
    hits = sorted(glob.glob(pattern))
    return os.path.dirname(hits[0]) if hits else None


def perf_analyzer_env() -> dict:
    """os.environ with the CUDA runtime wheel's lib directory first on
    LD_LIBRARY_PATH."""
    env = dict(os.environ)
    lib = cudart_lib_dir()
    if lib:
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = lib + (":" + old if old else "")
    return env


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def kernel() -> str:
    return f"{platform.system()} {platform.release()}"


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def percentile(sorted_values: list[float], q: float) -> float:
    """The q quantile (0..1) of sorted values by nearest rank (as odin's
    summary computes it); NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(q * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
