"""What a benchmark prints about the host it ran on (imported by the scripts beside it).

Speed claims differ between machines: the CPU model, the usable cores, the vector flags
TensorFlow's kernels use (``avx512_bf16`` decides whether bf16 pays off) and the load
average at the time of the run go at the top of every benchmark's output.
"""

from __future__ import annotations

import os

#: /proc/cpuinfo flags that change TensorFlow's CPU kernels.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def describe() -> str:
    """One line: CPU model, cores (usable), the flags of `FLAGS` present (``avx512_bf16``
    named as present or absent) and the load average. Never raises: unknown values are
    printed as such."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    present = [f for f in FLAGS if f in flags]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {model}; {os.cpu_count()} CPUs ({usable} usable); flags: "
            f"{' '.join(present) or 'none of interest'} (avx512_bf16 "
            f"{'present' if 'avx512_bf16' in flags else 'absent'}); load average {load}")
