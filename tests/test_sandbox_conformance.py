"""The sandbox conformance suite: the same tests against every registered backend.

Each test runs the real runner on a real job (a tiny model, 8 images) whose ``model.py``
starts with a probe. The promises every backend keeps (exit codes, wall clock, scrubbed
environment, capped log and output) run against all of them; the isolation promises
(read-only mounts, no network, limits, nothing of the host visible) against the isolated
ones, with the process backend as the control where a test needs one (it can reach the
host's network, so the network test can fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kit.jobs import eager_spec, kill_sandbox
from kit.served import ServeDaemon

from harness.runner.contract import JOB_FILE, to_json
from harness.sandbox import RunJob, RunOutcome, SandboxPolicy, backends, get_backend
from harness.sandbox.base import Backend
from harness.sandbox.layout import runner_root
from harness.sandbox.zygote import Zygote

# "-zygote": the same backend's warm runner (``sandbox/zygote.py``): each run forked from one
# pre-imported interpreter per policy, runs of one test module after one another
ISOLATED = [
    pytest.param("bwrap", marks=pytest.mark.bwrap),
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("bwrap-zygote", marks=pytest.mark.bwrap),
    pytest.param("docker-zygote", marks=pytest.mark.docker),
    # through `grade serve`: a daemon's warm sandboxes (harness/served_sandboxes.py)
    pytest.param("bwrap-served", marks=pytest.mark.bwrap),
    pytest.param("docker-served", marks=pytest.mark.docker),
]
ZYGOTES = ISOLATED[2:4]
ALL = [pytest.param("process"), *ISOLATED]

POLICY = SandboxPolicy(
    wall_seconds=120,
    memory_bytes=1024 * 2**20,
    pids=32,
    cpus=1,
    tmpfs_bytes=8 * 2**20,
    output_bytes=8 * 2**20,
    log_bytes=16 * 1024,
)

MODEL = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def build_model():
    return Net()
"""

# Raise the findings: the runner reports the message as data, in every backend.
REPORT = "\nraise RuntimeError('PROBE' + json.dumps(found))\n"


def test_every_registered_backend_is_in_this_suite() -> None:
    assert set(backends) == {"process", "bwrap", "docker"}


@pytest.fixture(scope="module")
def backend_cache() -> Iterator[dict[Any, Any]]:
    """Backends by name, the zygotes by name and policy, and a `grade serve` with the
    served ones (all closed at the end)."""
    cache: dict[Any, Any] = {}
    yield cache
    for key, value in cache.items():
        if isinstance(key, tuple) or key == "daemon":
            value.close()


def _backend(name: str, cache: dict[Any, Any]) -> Backend:
    name = name.removesuffix("-zygote").removesuffix("-served")
    if name not in cache:
        cache[name] = get_backend(name)  # unavailable: UserError, so the test fails
    return cache[name]


def _runs(name: str, cache: dict[Any, Any]) -> Callable[[RunJob], RunOutcome]:
    """How ``name`` runs a job: the backend's own run, its zygote for the job's policy, or
    a `grade serve`'s warm sandboxes (``-served``)."""
    backend = _backend(name, cache)
    if name.endswith("-served"):
        if "daemon" not in cache:
            cache["daemon"] = ServeDaemon(Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp")))
        return cache["daemon"].runs(backend)
    if not name.endswith("-zygote"):
        return backend.run

    def run(job: RunJob) -> RunOutcome:
        if (name, job.policy) not in cache:
            cache[name, job.policy] = backend.runner(job.policy)
        outcome: RunOutcome = cache[name, job.policy].run(job)
        return outcome

    return run


def _job(root: Path, probe: str, policy: SandboxPolicy = POLICY) -> RunJob:
    """A job folder set laid out like the pipeline's: a labels file and a secret lie next
    to the inputs, where a sandbox must not see them."""
    import torch
    from safetensors.torch import save_file

    sub, split, job, out = root / "sub", root / "split", root / "job", root / "out"
    for folder in (sub, split / "inputs", job, out):
        folder.mkdir(parents=True)
    (sub / "model.py").write_text(textwrap.dedent(probe) + MODEL)
    torch.manual_seed(0)
    save_file(
        {"fc.weight": torch.randn(3, 64), "fc.bias": torch.zeros(3)},
        str(sub / "weights.safetensors"),
    )
    rng = np.random.default_rng(0)
    np.save(split / "inputs" / "inputs.npy", rng.integers(0, 255, (8, 1, 8, 8), dtype=np.uint8))
    np.save(split / "labels.npy", np.arange(8))
    (root / "secret_seed.txt").write_text("31337")
    spec = eager_spec()
    (job / JOB_FILE).write_text(to_json(spec))
    return RunJob(sub, split / "inputs", job, out, policy, label="conformance")


def _run(name: str, cache: dict[Any, Any], root: Path, probe: str, **policy: Any) -> RunOutcome:
    job = _job(root, probe, replace(POLICY, **policy))
    return _runs(name, cache)(job)


def _findings(outcome: RunOutcome) -> dict[str, Any]:
    report = json.loads((outcome.output_dir / "report.json").read_text())
    message = report["error"]["message"]
    assert message.startswith("PROBE"), outcome.log[-2000:]
    return json.loads(message[len("PROBE") :])


# -- promises every backend keeps -------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_an_honest_run_is_ok_and_writes_predictions(name, backend_cache, tmp_path) -> None:
    outcome = _run(name, backend_cache, tmp_path, "")
    assert (outcome.status, outcome.exit_code) == ("ok", 0), outcome.log[-2000:]
    predictions = np.load(outcome.output_dir / "predictions.npy", allow_pickle=False)
    assert predictions.shape == (8, 3)
    assert outcome.backend == name.removesuffix("-zygote").removesuffix("-served")


@pytest.mark.parametrize("name", ALL)
def test_exit_codes_pass_through(name, backend_cache, tmp_path) -> None:
    outcome = _run(name, backend_cache, tmp_path, "import os\nos._exit(7)\n")
    assert (outcome.status, outcome.exit_code) == ("error", 7)


@pytest.mark.parametrize("name", ALL)
def test_death_by_signal_is_a_negative_exit_code(name, backend_cache, tmp_path) -> None:
    outcome = _run(name, backend_cache, tmp_path, "import ctypes\nctypes.string_at(0)\n")
    assert (outcome.status, outcome.exit_code) == ("error", -11)


@pytest.mark.parametrize("name", ALL)
def test_the_wall_clock_ends_a_run(name, backend_cache, tmp_path) -> None:
    outcome = _run(name, backend_cache, tmp_path, "import time\ntime.sleep(600)\n", wall_seconds=4)
    assert outcome.status == "timeout"
    assert "wall-clock limit of 4 s" in outcome.reason
    assert 4 <= outcome.wall_seconds < 16


@pytest.mark.parametrize("name", ALL)
def test_the_environment_is_scrubbed(name, backend_cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_SECRET_SEED", "31337")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    probe = "import json, os\nfound = dict(os.environ)\n" + REPORT
    env = _findings(_run(name, backend_cache, tmp_path, probe))
    allowed = {
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "LANG",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PATH", "HOME", "TMPDIR", "PYTHONPATH",
        "HOSTNAME", "LC_CTYPE", "PWD", "USER", "LOGNAME", "CUDA_VISIBLE_DEVICES",
    }  # fmt: skip
    assert set(env) <= allowed, set(env) - allowed
    assert not any("31337" in v or "hunter2" in v for v in env.values())
    if name == "process":  # it cannot withhold the GPU's device nodes: CUDA is told instead
        assert env["CUDA_VISIBLE_DEVICES"] == ""
    if name.startswith("bwrap"):  # no /etc/passwd inside: getpass.getuser() reads USER
        assert env["USER"] == env["LOGNAME"] == "sandbox"


@pytest.mark.bwrap
def test_a_gpu_run_is_told_where_the_driver_library_is(backend_cache, tmp_path, monkeypatch):
    """CUDA images keep ``libcuda.so.1`` where only ``LD_LIBRARY_PATH`` names it (the
    device machine's ``/usr/local/nvidia/lib64``): a GPU run gets that folder read-only and
    the variable; a CPU run gets neither."""
    driver = Path(tempfile.mkdtemp(prefix="harness-driver-", dir="/var/tmp"))
    in_tmp = tmp_path / "lib"  # a folder in /tmp would cover the sandbox's own /tmp: never
    try:
        for folder in (driver, in_tmp):
            folder.mkdir(exist_ok=True)
            os.chmod(folder, 0o755)
            (folder / "libcuda.so.1").write_text("the driver")
            (folder / "libcuda.so.1").chmod(0o644)
        monkeypatch.setenv("LD_LIBRARY_PATH", f"relative/lib:{driver}:{in_tmp}:/nonexistent")
        probe = (
            textwrap.dedent(f"""
            import json, os
            found = {{"path": os.environ.get("LD_LIBRARY_PATH"), "files": None, "written": None}}
            try:
                found["files"] = os.listdir({str(driver)!r})
                open({str(driver / "x")!r}, "w")
                found["written"] = True
            except OSError as exc:
                found["written"] = found["written"] or exc.strerror
        """)
            + REPORT
        )
        gpu = _findings(_run("bwrap", backend_cache, tmp_path / "gpu", probe, gpu=True))
        assert gpu["path"] == str(driver) and gpu["files"] == ["libcuda.so.1"]
        assert gpu["written"] == "Read-only file system"
        cpu = _findings(_run("bwrap", backend_cache, tmp_path / "cpu", probe))
        assert cpu["path"] is None and cpu["files"] is None
    finally:
        shutil.rmtree(driver)


@pytest.mark.parametrize("name", ALL)
def test_the_log_keeps_head_and_tail_within_its_cap(name, backend_cache, tmp_path) -> None:
    probe = "print('FIRST')\nfor i in range(3000):\n    print('x' * 40, i)\nprint('LAST')\n"
    outcome = _run(name, backend_cache, tmp_path, probe)
    assert outcome.status == "ok"
    assert "FIRST" in outcome.log and "LAST" in outcome.log
    assert "bytes of output cut" in outcome.log
    assert len(outcome.log.encode()) < POLICY.log_bytes + 200


# The runner's own output folder, found the same way in every backend: from its argv.
_WRITE_OUTPUT = """
import os, sys
out = sys.argv[sys.argv.index("--output") + 1]
for i in range(6):
    with open(os.path.join(out, f"blob{i}.bin"), "wb") as fh:
        fh.write(os.urandom(2 * 2**20))
"""


@pytest.mark.parametrize("name", ALL)
def test_an_output_folder_over_its_cap_is_killed(name, backend_cache, tmp_path) -> None:
    outcome = _run(name, backend_cache, tmp_path, _WRITE_OUTPUT)
    assert outcome.status == "killed"
    assert "output limit of 8 MiB" in outcome.reason


# -- isolation promises ------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_services() -> Iterator[dict[str, Any]]:
    """A TCP listener on every interface and an abstract unix socket on the host."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(16)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract = f"harness-conformance-{secrets.token_hex(4)}"
    unix.bind("\0" + abstract)
    unix.listen(16)
    stop = threading.Event()

    def accept(sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.accept()[0].close()
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in (tcp, unix)]
    for t in threads:
        t.start()
    addresses = {"127.0.0.1", *_host_addresses()}
    yield {"port": tcp.getsockname()[1], "addresses": sorted(addresses), "abstract": abstract}
    stop.set()
    tcp.close()
    unix.close()


def _host_addresses() -> set[str]:
    found = set()
    for line in Path("/proc/net/fib_trie").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "|--" and not parts[1].startswith(("0.", "127.")):
            found.add(parts[1])
    return found


# Connect to the host's listeners (their addresses come in the inputs folder).
_NETWORK = """
import json, os, socket, sys
found = {}
inputs = sys.argv[sys.argv.index("--inputs") + 1]
services = json.load(open(os.path.join(inputs, "services.json")))
reached = []
for address in services["addresses"]:
    try:
        socket.create_connection((address, services["port"]), timeout=3).close()
        reached.append(address)
    except OSError:
        pass
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\\0" + services["abstract"])
    reached.append("abstract:" + services["abstract"])
except OSError:
    pass
found["reached"] = reached
"""

# What a sandbox sees and may do (only for isolated backends: it writes to fixed paths).
_INSPECT = """
found["uid"], found["gid"] = os.getuid(), os.getgid()
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
found["cap_eff"] = status["CapEff"].strip()
found["no_new_privs"] = status.get("NoNewPrivs", "").strip()
found["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
found["root"] = sorted(os.listdir("/"))
found["inputs"] = sorted(os.listdir("/inputs"))
writable = {}
for folder in ["/", "/etc", "/usr", "/dev", "/submission", "/inputs", "/job", "/opt/harness",
               "/tmp", "/output"]:
    try:
        with open(os.path.join(folder, "probe-write"), "w") as fh:
            fh.write("x")
        writable[folder] = True
    except OSError:
        writable[folder] = False
found["writable"] = writable
hits = []
for top, dirs, files in os.walk("/"):
    if top.startswith(("/proc", "/sys", "/dev")) or "-packages" in top:
        dirs[:] = []
        continue
    hits += [os.path.join(top, f) for f in files
             if f in ("labels.npy", "secret_seed.txt") or f.startswith(".harness-canary")]
found["secrets"] = hits
"""


def _probe_services(
    name: str, cache: dict[Any, Any], services: dict[str, Any], root: Path, probe: str
) -> dict[str, Any]:
    job = _job(root, probe + REPORT)
    (job.inputs_dir / "services.json").write_text(json.dumps(services))
    return _findings(_runs(name, cache)(job))


@pytest.fixture(scope="module")
def inspected() -> Iterator[dict[str, dict[str, Any]]]:
    """The isolated backends' findings, one inspection run each. A canary file lies in the
    host's home folder meanwhile: no sandbox may see it."""
    canary = Path.home() / f".harness-canary-{secrets.token_hex(4)}"
    canary.write_text("the host's home")
    try:
        yield {}
    finally:
        canary.unlink()


def _inspect(name, cache, services, store, root: Path) -> dict[str, Any]:
    if name not in store:
        store[name] = _probe_services(name, cache, services, root, _NETWORK + _INSPECT)
    return store[name]


def test_the_process_backend_reaches_the_host_network(
    backend_cache, host_services, tmp_path
) -> None:
    """The control: without isolation the probe reaches the host's listeners."""
    found = _probe_services("process", backend_cache, host_services, tmp_path, _NETWORK)
    assert "127.0.0.1" in found["reached"]
    assert f"abstract:{host_services['abstract']}" in found["reached"]


@pytest.mark.parametrize("name", ISOLATED)
def test_no_network(name, backend_cache, host_services, inspected, tmp_path) -> None:
    found = _inspect(name, backend_cache, host_services, inspected, tmp_path)
    assert found["reached"] == []


@pytest.mark.parametrize("name", ISOLATED)
def test_not_root_no_capabilities_no_new_privileges(
    name, backend_cache, host_services, inspected, tmp_path
) -> None:
    found = _inspect(name, backend_cache, host_services, inspected, tmp_path)
    assert found["uid"] != 0 and found["gid"] != 0
    assert int(found["cap_eff"], 16) == 0
    assert found["no_new_privs"] == "1"


@pytest.mark.parametrize("name", ISOLATED)
def test_only_tmp_and_output_are_writable(
    name, backend_cache, host_services, inspected, tmp_path
) -> None:
    found = _inspect(name, backend_cache, host_services, inspected, tmp_path)
    writable = {folder for folder, ok in found["writable"].items() if ok}
    assert writable == {"/tmp", "/output"}


@pytest.mark.parametrize("name", ISOLATED)
def test_only_the_job_folders_are_visible(
    name, backend_cache, host_services, inspected, tmp_path
) -> None:
    found = _inspect(name, backend_cache, host_services, inspected, tmp_path)
    # labels and a secret lie next to the inputs on the host, a canary in the host's home
    assert found["secrets"] == []
    assert found["inputs"] == ["inputs.npy", "services.json"]
    assert {"submission", "inputs", "job", "output", "opt", "tmp"} <= set(found["root"])
    assert found["processes"] <= 3  # the supervisor and the runner: a PID namespace


@pytest.mark.parametrize("name", ISOLATED)
def test_the_process_limit_ends_a_fork_bomb(name, backend_cache, tmp_path) -> None:
    probe = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    outcome = _run(name, backend_cache, tmp_path, probe, wall_seconds=60)
    assert outcome.status == "killed"
    assert "process limit of 32" in outcome.reason
    assert outcome.wall_seconds < 50


@pytest.mark.parametrize("name", ISOLATED)
def test_the_memory_limit_stops_an_allocation(name, backend_cache, tmp_path) -> None:
    probe = "hog = []\nwhile True:\n    hog.append(bytearray(32 * 2**20))\n"
    outcome = _run(name, backend_cache, tmp_path, probe)
    assert outcome.status == "killed"
    assert "memory limit of 1024 MiB" in outcome.reason


@pytest.mark.parametrize("name", ISOLATED)
def test_tmp_is_small(name, backend_cache, tmp_path) -> None:
    probe = "with open('/tmp/fill', 'wb') as fh:\n    while True:\n        fh.write(bytes(2**20))\n"
    outcome = _run(name, backend_cache, tmp_path, probe, output_bytes=32 * 2**20)
    assert outcome.status == "killed"
    assert "disk limit: /tmp holds at most 8 MiB" in outcome.reason


@pytest.mark.parametrize("name", ISOLATED)
def test_a_flood_on_stdout_is_killed(name, backend_cache, tmp_path) -> None:
    probe = "import sys\nwhile True:\n    sys.stdout.write('y' * 65535 + '\\n')\n"
    outcome = _run(name, backend_cache, tmp_path, probe)
    assert outcome.status == "killed"
    assert "log limit" in outcome.reason
    assert len(outcome.log.encode()) < POLICY.log_bytes + 200


@pytest.mark.parametrize("name", ISOLATED)
def test_signals_cannot_leave_the_sandbox(name, backend_cache, tmp_path) -> None:
    """kill(-1) inside reaches only the sandbox; a host process of the sandbox's own user
    survives, and the run itself goes on (its supervisor is PID 1)."""
    import subprocess

    canary = subprocess.Popen(["sleep", "300"], user=65534 if os.geteuid() == 0 else None)
    try:
        probe = (
            "import os, signal\nfor pid in (-1, 1):\n    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        )
        outcome = _run(name, backend_cache, tmp_path, probe)
        assert outcome.status == "ok", outcome.log[-2000:]
        assert canary.poll() is None
    finally:
        canary.kill()
        canary.wait()


# -- the evaluation image -------------------------------------------------------------------


@pytest.mark.docker
def test_results_record_the_image_and_its_id(backend_cache) -> None:
    import docker

    backend = _backend("docker", backend_cache)
    info = backend.describe()
    assert info["image"].startswith("harness-eval:")
    assert docker.from_env().images.get(info["image"]).id == info["image_id"]


@pytest.mark.docker
def test_the_dockerfile_builds_on_a_base_image_given_as_argument(backend_cache) -> None:
    """The online build, with the offline image as its base (no registry here): the
    Dockerfile keeps the base's Python and gives the same non-root user."""
    import docker

    from harness.sandbox.docker.image import build_image, default_tag

    tag = f"harness-eval:test-{secrets.token_hex(3)}"
    built = build_image(base=default_tag(), offline=False, tag=tag)
    client = docker.from_env()
    try:
        assert (built.method, built.base, built.tag) == ("dockerfile", default_tag(), tag)
        script = "import os, torch, numpy, safetensors; print(os.getuid())"
        out = client.containers.run(tag, ["python3", "-c", script], remove=True)
        assert out.decode().strip() == "1000"
    finally:
        client.images.remove(tag, force=True)


# Call the kernel's administrative interfaces directly (numbers of this architecture).
_SYSCALLS = """
import ctypes, errno, json, platform
NUMBERS = {
    "x86_64": {"keyctl": 250, "add_key": 248, "bpf": 321, "mount": 165, "unshare": 272,
               "setns": 308, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
               "ptrace": 101},
    "aarch64": {"keyctl": 219, "add_key": 217, "bpf": 280, "mount": 40, "unshare": 97,
                "setns": 268, "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104,
                "ptrace": 117},
}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
found = {}
for name, number in NUMBERS.items():
    ctypes.set_errno(0)
    args = (16, 0, 0, 0, 0) if name == "ptrace" else (0, 0, 0, 0, 0)  # PTRACE_ATTACH pid 0
    result = libc.syscall(number, *args)
    found[name] = errno.errorcode.get(ctypes.get_errno(), "?") if result == -1 else "allowed"
status = open("/proc/self/status").read().split("Seccomp:")[1].split()[0]
found["seccomp_mode"] = status
raise RuntimeError("PROBE" + json.dumps(found))
"""
# docker's default profile denies these (ptrace it allows on kernels >= 4.8, and bwrap's
# filter denies it too)
DENIED_EVERYWHERE = (
    "keyctl",
    "add_key",
    "bpf",
    "mount",
    "unshare",
    "setns",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
)


@pytest.mark.parametrize("name", ISOLATED)
def test_the_kernels_admin_calls_fail_with_eperm(name, backend_cache, tmp_path) -> None:
    found = _findings(_run(name, backend_cache, tmp_path, _SYSCALLS))
    assert found["seccomp_mode"] == "2"  # a seccomp filter is installed
    assert {call: found[call] for call in DENIED_EVERYWHERE} == dict.fromkeys(
        DENIED_EVERYWHERE, "EPERM"
    )
    if name.startswith("bwrap"):
        assert found["ptrace"] == "EPERM"


@pytest.mark.parametrize("name", ISOLATED)
def test_dev_shm_is_capped_like_tmp(name, backend_cache, tmp_path) -> None:
    probe = (
        "with open('/dev/shm/fill', 'wb') as fh:\n    while True:\n        fh.write(bytes(2**20))\n"
    )
    outcome = _run(name, backend_cache, tmp_path, probe, output_bytes=32 * 2**20)
    assert outcome.status == "killed", outcome.log[-2000:]
    assert "disk limit" in outcome.reason


# -- the zygote: one run after another in one sandbox ---------------------------------------

# A run that leaves everything it can behind: a detached process that keeps writing into
# /output and /tmp, files in /tmp and /dev/shm (some in a folder of mode 000), a SysV
# shared memory segment; and that
# prints the zygote's "done" line for every run number, then takes its time.
_LEAVE_BEHIND = """
import ctypes, os, sys, time
for seq in range(1, 40):
    print(f"@zygote done {seq} 0 0", flush=True)
    print(f"@zygote done {seq} 0 0", file=sys.stderr, flush=True)
open("/tmp/planted", "w").write("from the last run")
open("/dev/shm/planted", "w").write("from the last run")
for top in ("/tmp", "/output"):
    os.makedirs(f"{top}/locked/inner/deep")
    open(f"{top}/locked/inner/deep/planted", "w").write("from the last run")
    os.chmod(f"{top}/locked/inner", 0)
ctypes.CDLL(None).shmget(0x4242, 4096, 0o1666)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for i in range(400):
            for path in (f"/output/late{i}", f"/tmp/late{i}"):
                try:
                    open(path, "w").write("still here")
                except OSError:
                    pass
            time.sleep(0.025)
    os._exit(0)
time.sleep(3)
"""

# What the next run finds when it starts.
_FIND_LEFTOVERS = """
import json, os, time
time.sleep(0.5)
found = {
    "tmp": sorted(os.listdir("/tmp")),
    "shm": sorted(os.listdir("/dev/shm")),
    "sysv": open("/proc/sysvipc/shm").read().splitlines()[1:],
    "output": sorted(set(os.listdir("/output")) - {"report.json"}),  # the runner's own
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "pid": os.getpid(),
    "ctl": sorted(os.listdir("/ctl")),
    "log": sorted(os.listdir("/log")),
    "log_fd": os.readlink("/proc/self/fd/1"),
}
"""


@pytest.mark.parametrize("name", ZYGOTES)
def test_nothing_of_a_run_meets_the_next(name, backend_cache, tmp_path) -> None:
    """The end of a run is the zygote's word on its own stdout, said after every other
    process was killed and /tmp, /dev/shm and SysV IPC were emptied: a run's forged "done"
    lines do not end it early, and the next run finds nothing of it."""
    left = _run(name, backend_cache, tmp_path / "a", _LEAVE_BEHIND)
    assert left.status == "ok", left.log[-2000:]
    assert left.wall_seconds >= 3  # the forged lines did not end it
    after = _run(name, backend_cache, tmp_path / "b", _FIND_LEFTOVERS + REPORT)
    assert after.info["sandbox"] == left.info["sandbox"]  # one sandbox served both
    found = _findings(after)
    assert (found["tmp"], found["shm"], found["sysv"], found["output"]) == ([], [], [], [])
    assert found["processes"] == [1, found["pid"]]  # the zygote (PID 1) and this run
    # nothing names how many runs came before: one go, one log, named by a random token
    assert found["ctl"] == ["go"] and len(found["log"]) == 1, found
    assert found["log_fd"] == f"/log/{found['log'][0]}" and len(found["log"][0]) == 16
    assert found["log"][0] != after.info["request"]  # the host's count of its requests


@pytest.mark.parametrize("name", ZYGOTES)
def test_a_zygote_that_ended_between_runs_costs_no_run(name, backend_cache, tmp_path, caplog):
    """Killed from outside while idle: the next run gets a fresh zygote, not a failure."""
    first = _run(name, backend_cache, tmp_path / "a", "")
    assert first.status == "ok", first.log[-2000:]
    zygote = backend_cache[name, POLICY]
    server = zygote._server
    kill_sandbox(name.removesuffix("-zygote"), first.info["sandbox"])
    deadline = time.monotonic() + 30
    while not server.ended(0.05):
        assert time.monotonic() < deadline, "the killed zygote did not end"
    after = _run(name, backend_cache, tmp_path / "b", "")
    assert after.status == "ok", after.log[-2000:]
    assert after.info["sandbox"] != first.info["sandbox"]
    assert "zygote's sandbox ended between jobs" in caplog.text


@pytest.mark.parametrize("name", ZYGOTES)
def test_a_zygote_started_by_a_thread_that_ends_outlives_it(name, backend_cache, tmp_path):
    """A grading's worker thread starts the batch's zygote and may end before the batch
    does; the zygote's sandbox must not die with it (bwrap's --die-with-parent follows
    the thread that forked bwrap)."""
    first: list[RunOutcome] = []  # a policy of its own: this thread starts its zygote

    def run_then_end() -> None:
        first.append(_run(name, backend_cache, tmp_path / "a", "", wall_seconds=121))
        time.sleep(1.0)

    worker = threading.Thread(target=run_then_end)
    worker.start()
    worker.join()
    time.sleep(0.5)
    assert first[0].status == "ok", first[0].log[-2000:]
    after = _run(name, backend_cache, tmp_path / "b", "", wall_seconds=121)
    assert after.status == "ok", after.log[-2000:]
    assert after.info["sandbox"] == first[0].info["sandbox"]  # the same zygote served both


_PRELOADED = """
import json, sys
found = {"torchvision": "torchvision" in sys.modules, "timm": "timm" in sys.modules}
"""


@pytest.mark.parametrize("name", ["process", *ZYGOTES])
def test_a_runner_imports_the_batchs_optional_libraries_ahead(name, backend_cache, tmp_path):
    """Asked to (the batch's code imports torchvision), a runner has imported it before a
    run starts, once for the batch; asked for nothing, it has not. timm is not in the
    evaluation image: a runner that cannot import an optional library serves all the same."""
    backend = _backend(name, backend_cache)
    policy = replace(POLICY, wall_seconds=122)  # runners of their own, closed here
    for preload, expected in (
        ((), {"torchvision": False, "timm": False}),
        (("torchvision", "timm"), {"torchvision": True, "timm": name != "docker-zygote"}),
    ):
        with contextlib.closing(backend.runner(policy, preload)) as runner:
            outcome = runner.run(
                _job(tmp_path / "-".join(("run", *preload)), _PRELOADED + REPORT, policy)
            )
        assert _findings(outcome) == expected, (preload, outcome.log[-2000:])


_WARM = """
import json, sys
found = {"exported": "torch._inductor.ir" in sys.modules}  # the first export imports it
"""


@pytest.mark.parametrize("name", ["process", *ZYGOTES])
def test_a_runner_has_exported_once_before_a_run_starts(name, backend_cache, tmp_path):
    """A pre-imported runner (the fork server, a zygote) has run phase A's warm-up, so a
    run finds the first export's lazy imports done (the imports alone do not do them:
    ``tests/test_forkserver.py``)."""
    outcome = _run(name, backend_cache, tmp_path, _WARM + REPORT)
    assert _findings(outcome) == {"exported": True}, outcome.log[-2000:]


# A preloaded module the run never imports, or one it does that registers something before
# it fails (as torch 2.11's export stack did on the H200: imported again in a fork of the
# zygote it failed with another error, "already registered", blamed on the student).
_HALF_REGISTERED = """
import builtins
if getattr(builtins, "_registered_by_the_test", False):
    raise AssertionError("registered twice")
builtins._registered_by_the_test = True
raise ImportError("broken on purpose")
"""


@pytest.mark.parametrize("name", ZYGOTES)
@pytest.mark.parametrize("module", ["rebuild", "load"])
def test_a_zygote_that_cannot_import_its_stack_hands_its_runs_to_fresh_sandboxes(
    name, module, backend_cache, tmp_path, caplog
) -> None:
    """A zygote whose preload fails serves nothing: each run gets a sandbox of its own,
    whose runner imports for itself and reports the import's own error."""
    backend = _backend(name, backend_cache)
    source = runner_root() / "harness" / "runner" / f"{module}.py"
    original = source.read_text()
    source.write_text(original + _HALF_REGISTERED)
    try:
        with backend.runner(POLICY) as runner:
            assert isinstance(runner, Zygote)
            outcomes = [runner.run(_job(tmp_path / str(i), "")) for i in range(2)]
            assert runner.unfit and runner.starts == 1 and runner.sandbox is None
    finally:
        source.write_text(original)
    # the operator is told once, with the zygote's reason (the CLI prints it as a warning)
    said = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert said.count("could not import its stack") == 1, said
    assert f"import harness.runner.{module}: ImportError: broken on purpose" in said
    for outcome in outcomes:
        assert outcome.info.get("runner") != "zygote"  # a fresh sandbox ran it
        if module == "rebuild":  # not needed by this run: it is graded as ever
            assert (outcome.status, outcome.exit_code) == ("ok", 0), outcome.log[-2000:]
            assert np.load(outcome.output_dir / "predictions.npy").shape == (8, 3)
        else:  # the run's own import fails, with its own error
            assert (outcome.status, outcome.exit_code) == ("error", 3)  # the runner's "failed"
            report = json.loads((outcome.output_dir / "report.json").read_text())
            assert "broken on purpose" in json.dumps(report["error"]), report["error"]
            assert "registered twice" not in json.dumps(report)


# What a run may reach of the zygote and of the host's requests.
_REACH_ZYGOTE = """
import json, os
found = {"ctl": [], "zygote": []}
for seq in range(1, 40):
    try:
        with open(f"/ctl/{seq}", "w") as fh:
            fh.write("{}")
        found["ctl"].append(seq)
    except OSError:
        pass
for path, mode in (("/proc/1/fd/1", "ab"), ("/proc/1/fd/0", "rb"), ("/proc/1/mem", "rb+"),
                   ("/proc/1/environ", "rb")):
    try:
        open(path, mode).close()
        found["zygote"].append(path)
    except OSError:
        pass
found["parent"] = os.getppid()
"""


@pytest.mark.parametrize("name", ZYGOTES)
def test_a_run_cannot_reach_the_zygote_or_make_a_request(name, backend_cache, tmp_path) -> None:
    found = _findings(_run(name, backend_cache, tmp_path, _REACH_ZYGOTE + REPORT))
    assert found["ctl"] == []  # read-only: only the host says which run comes next
    assert found["zygote"] == []  # not dumpable: its stdout cannot be reopened
    assert found["parent"] == 1  # the zygote is PID 1: the kernel drops the run's signals


# A run that puts a link to a host file, or a FIFO, where its own log is: the host reads
# its log without following links and never blocks on a FIFO.
_SWAP_LOG = """
import os
log = os.readlink("/proc/self/fd/1")
os.unlink(log)
if "@FIFO@" == "yes":
    os.mkfifo(log)
else:
    os.symlink("@SECRET@", log)
"""


@pytest.mark.parametrize("name", ZYGOTES)
@pytest.mark.parametrize("fifo", ["no", "yes"])
def test_a_run_cannot_make_the_host_read_a_link_or_a_fifo_as_its_log(
    name, fifo, backend_cache, tmp_path
) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-ONLY-31337")
    secret.chmod(0o644)
    probe = _SWAP_LOG.replace("@FIFO@", fifo).replace("@SECRET@", str(secret))
    outcome = _run(name, backend_cache, tmp_path / "run", probe, wall_seconds=60)
    assert outcome.status == "ok", outcome.log[-2000:]
    assert "HOST-ONLY-31337" not in outcome.log
    assert outcome.wall_seconds < 50  # a FIFO did not block the host
