"""Whether a GPU is here, and whether a grading uses one: the one home of both rules.

A GPU is "here" when the NVIDIA device nodes a sandbox would be given exist (the driver's
``/dev/nvidiactl`` and at least one ``/dev/nvidia<N>``): ``nvidia-smi`` on the PATH is not
enough, a container or a bubblewrap sandbox needs the nodes. A grading uses it when its
task does not pin the CPU, the caller did not say ``gpu=False``, and one is available
where the grading runs (this machine, or for Ray the cluster).
"""

from __future__ import annotations

import glob
import os


def gpu_present() -> bool:
    """The NVIDIA device nodes are on this machine."""
    return os.path.exists("/dev/nvidiactl") and bool(glob.glob("/dev/nvidia[0-9]*"))


def gpu_device_nodes() -> list[str]:
    """The NVIDIA device nodes a sandbox that uses the GPU is given (bwrap binds them;
    docker's device request does the same through the NVIDIA container runtime)."""
    fixed = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    return [n for n in fixed if os.path.exists(n)] + sorted(glob.glob("/dev/nvidia[0-9]*"))


def use_gpu(task_device: str, asked: bool | None, available: bool) -> bool:
    """``task_device`` is the task's ``device`` ("auto" or "cpu"); ``asked`` the caller's
    ``GradeOptions.gpu`` (None: whatever is available)."""
    return task_device != "cpu" and asked is not False and available


def device_env(gpu: bool) -> dict[str, str]:
    """The process backend's GPU environment. Without the GPU policy CUDA is told to see no
    device (this backend cannot withhold the device nodes); with it, the driver's library
    folders are named (``gpu_library_dirs``), as a clean environment drops them."""
    if not gpu:
        return {"CUDA_VISIBLE_DEVICES": ""}
    folders = gpu_library_dirs()
    return {"LD_LIBRARY_PATH": ":".join(folders)} if folders else {}


def gpu_library_dirs() -> list[str]:
    """The folders of ``LD_LIBRARY_PATH`` that hold the NVIDIA driver's user-space library
    (``libcuda.so.1``): CUDA images often keep it outside the loader's cache (for example
    ``/usr/local/nvidia/lib64``), and a sandbox that starts with a clean environment must be
    told where it is, or CUDA finds no device."""
    found = []
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if folder.startswith("/") and os.path.exists(os.path.join(folder, "libcuda.so.1")):
            found.append(os.path.realpath(folder))
    return list(dict.fromkeys(found))
