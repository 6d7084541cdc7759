#!/usr/bin/env bash
# The GPU machine's checks and figures in one run: the harness's GPU path on the process
# and bwrap backends, then the three GPU benchmarks of benchmarks/README.md ("GPU").
#
#   bash benchmarks/gpu.sh OUT [--quick]
#   STEPS="correlation resnet" bash benchmarks/gpu.sh OUT     # some of the figures only
#
# It stops at the first check that fails (the path must work before its figures mean
# anything). Where the machine's Python lacks a dependency, wheels in .whl/ are installed
# to /tmp/site first; where it lacks bubblewrap, a bwrap binary and its libraries in
# .devkit/ are installed. Everything it measures is written under OUT.
set -uo pipefail
out=${1:?usage: benchmarks/gpu.sh OUT [--quick]}
quick=${2:-}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if ! $py -c "import pydantic, docker" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
if ! command -v bwrap > /dev/null && [ -x .devkit/bwrap ] && [ "$(id -u)" = 0 ]; then
    cp .devkit/bwrap /usr/bin/bwrap
    for lib in .devkit/lib/*; do
        [ -e "/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ] || cp "$lib" /usr/lib/x86_64-linux-gnu/
    done
    ldconfig
fi

{
    date -u
    nvidia-smi -L
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldconfig -p | grep -m2 libcuda || echo "libcuda: not in the loader's cache"
    bwrap --version || true
    $py -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$out/machine.txt"

step() {  # step NAME SECONDS COMMAND...: run, keep its log, stop the script if it fails
    local name=$1 limit=$2
    shift 2
    echo "== $name" >&2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/step.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s" >&2
    { echo "== $name: exit $rc after $((SECONDS - t0)) s"; cat "$out/step.log"; } >> "$out/steps.log"
    tail -n 25 "$out/step.log" >&2
    rm "$out/step.log"
    [ $rc = 0 ] || exit $rc
}

bench="$py benchmarks/grading_speed.py --work .cache/gpu-bench"
# 1. what a bwrap sandbox sees (a diagnostic: never stops the script)
timeout 300 $py benchmarks/gpu_probe.py > "$out/probe.log" 2>&1
echo "== probe: exit $?" >&2
grep -E "^(---|getuser|FAILED|cuda|[A-Za-z]*Error)" "$out/probe.log" >&2
# 2. the path: 2 submissions on each backend; phase B must report the GPU
step path 150 $bench --submissions 2 --images 1000 --backends process,bwrap --skip-naive \
    --out "$out/path.json"
backends=$($py - "$out/path.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
passed = []
for backend, runs in r["harness"].items():
    run = runs[0]
    ok = run.get("statuses") == ["graded"] and all(d.startswith("cuda") for d in run["devices"])
    print(backend, "PASSED" if ok else "FAILED", run, file=sys.stderr)
    passed += [backend] * ok
print("agreement with the bare loop:", r["max_abs_mse_difference_vs_bare"], file=sys.stderr)
print(",".join(passed))
PY
)
echo "backends on the GPU path: ${backends:-none}" >&2
[ -n "$backends" ] || exit 1
[ "$quick" = --quick ] && exit 0
# 3. the figures (STEPS: which of them; default all three)
steps=" ${STEPS:-correlation references resnet} "
[[ $steps == *" correlation "* ]] && step correlation 180 $bench --backends "$backends" --out "$out/results-gpu.json"
[[ $steps == *" references "* ]] && step references 150 $bench --suite references --images 10000 \
    --out "$out/results-gpu-references.json"
[[ $steps == *" resnet "* ]] && step resnet 150 $bench --suite cifar10-resnet --submissions "${RESNETS:-30}" --images 10000 \
    --backends "$backends" --out "$out/results-gpu-resnet.json"
exit 0
