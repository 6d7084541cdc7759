"""The runner: the only harness code that runs beside a submission's code.

It runs inside a sandbox as ``python -m harness.runner --job DIR --submission DIR
--inputs DIR --output DIR`` and imports nothing from the rest of the harness: only the
standard library, numpy, torch and safetensors, which the evaluation image provides.
Everything it writes is data (``report.json``, ``.npy``, ``.safetensors``) that the host
validates before use; the host never trusts it for counts or scores.
"""

RUNNER_VERSION = 1
