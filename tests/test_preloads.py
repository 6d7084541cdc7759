"""The optional libraries a batch's runners import ahead (``harness/preloads.py``): read
from the import lines of the batch's own Python files, and handed to its runners."""

from __future__ import annotations

import os
from pathlib import Path

from kit import TINY_MODEL, make_submission

from harness.api import GradeOptions, grade
from harness.preloads import batch_preloads
from harness.sandbox import process


def _folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_import_lines_of_every_python_file_count(tmp_path: Path) -> None:
    plain = _folder(tmp_path / "plain", {"model.py": "import torch\nfrom torch import nn\n"})
    vision = _folder(
        tmp_path / "vision",
        {
            "model.py": "import torch\n",
            "nets/blocks.py": "def f():\n    from torchvision.ops import nms\n",
        },
    )
    both = _folder(tmp_path / "both", {"model.py": "import timm as t\n"})
    assert batch_preloads([plain]) == ()
    assert batch_preloads([plain, vision]) == ("torchvision",)
    assert batch_preloads([both]) == ("torchvision", "timm")  # timm imports torchvision


def test_what_is_not_an_import_line_or_not_a_file_counts_for_nothing(tmp_path: Path) -> None:
    words = _folder(
        tmp_path / "words",
        {
            "model.py": "# import torchvision\nx = 'see timm'\nimport torchvisionary\n",
            "notes.txt": "import torchvision\n",
        },
    )
    outside = _folder(tmp_path / "outside", {"real.py": "import timm\n"})
    os.symlink(outside / "real.py", words / "linked.py")
    assert batch_preloads([words, tmp_path / "missing"]) == ()


def test_a_batch_that_imports_torchvision_runs_from_a_runner_that_imported_it(
    env: Path, tmp_path: Path
) -> None:
    source = "import torchvision  # noqa: F401\n" + TINY_MODEL
    folder = make_submission(tmp_path / "subs", "team1", task="tiny", model_src=source)
    options = GradeOptions(sandbox="process", results_dir=tmp_path / "results", reports=False)
    # An earlier test of this worker may have left a server that imported more (which the
    # run would share): start from none, so the batch's own request is what is seen.
    process._close_all()
    [doc] = grade([folder], options=options)
    assert doc.status == "graded", doc.message
    preloads = {server.preload for server in process._SERVERS.values()}
    assert preloads == {("torchvision",)}, preloads


def test_a_run_that_needs_less_forks_from_a_server_that_imported_more() -> None:
    """A batch's predictions (no preloads asked) fork from the server of its runs (which
    imported torchvision): one server, one torch import, not two."""
    backend, env = process.ProcessBackend(), process.server_env(3)  # servers start on first use
    loaded = backend._server(env, ("torchvision",))
    try:
        assert backend._server(env, ()) is loaded
        assert backend._server(env, ("torchvision", "timm")) is not loaded
    finally:
        for key in [k for k in process._SERVERS if k[0] == tuple(sorted(env.items()))]:
            process._SERVERS.pop(key).close()
