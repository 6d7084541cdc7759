"""Grades that cannot be gamed: the exported program's host check and count, the corpus
of parameter-evasion and output-cheating tricks graded end to end, honest reference
counts, the duplicates report and the feedback quota."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.api import GradeOptions, grade
from harness.program import CheckError, Expect, check_program, count_program
from harness.runner.interpreter import Program
from harness.settings import settings

sys.path.insert(0, str(Path(__file__).parent / "cheats"))
import build_cheats  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
Members = dict[str, bytes]


# -- the host check, on archives torch.export.save wrote here -------------------------
def _load_reference(name: str) -> Any:
    path = ROOT / "reference_solutions" / name / "model.py"
    spec = importlib.util.spec_from_file_location(f"reference_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_model()


def _export(model: Any, shape: tuple[int, ...], target: Path, **kw: Any) -> Path:
    model.eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.rand(shape),), strict=False, **kw)
    torch.export.save(program, str(target))
    return target


def _tiny() -> Any:
    ns: dict[str, Any] = {}
    exec(build_cheats.BASE, ns)
    return ns["build_model"]()


EXPECT = Expect(input_shape=(4, 1, 150, 150), kind="regression", num_classes=0, max_bytes=2**26)


@pytest.fixture(scope="module")
def honest_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(_tiny(), (4, 1, 150, 150), tmp_path_factory.mktemp("pt2") / "program.pt2")


def _rewrite(source: Path, target: Path, edit: Callable[[Members], None], **zip_kw: Any) -> Path:
    with zipfile.ZipFile(source) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    edit(members)
    with zipfile.ZipFile(target, "w", **zip_kw) as out:
        for name, data in members.items():
            out.writestr(name, data)
    return target


def _json_edit(member: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        key = next(k for k in members if k.endswith(member))
        obj = json.loads(members[key])
        change(obj)
        members[key] = json.dumps(obj).encode()

    return edit


def test_an_honest_archive_passes_and_its_clean_copy_holds_no_pickle(
    honest_archive: Path, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.pt2"
    program, _ = check_program(honest_archive, clean, EXPECT)
    count = count_program(program, 1024)
    model = _tiny()
    assert count.counted == sum(p.numel() for p in model.parameters()) == 305
    with zipfile.ZipFile(clean) as zf:
        sample = next(n for n in zf.namelist() if n.endswith("sample_inputs/model.pt"))
        assert zf.read(sample) == b""  # the pickled sample inputs are gone
        graph = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("model.json"))))
        assert all(node["metadata"] == {} for node in graph["graph_module"]["graph"]["nodes"])
    x = torch.rand(4, 1, 150, 150)
    loaded = torch.export.load(str(clean)).module(check_guards=False)
    reference = torch.export.load(str(honest_archive)).module()
    assert torch.equal(loaded(x), reference(x))  # the clean copy is still a torch archive
    assert torch.equal(Program(clean, torch.device("cpu"))(x), reference(x))


@pytest.mark.parametrize(
    ("name", "edit", "phrase"),
    [
        (
            "pickled_weight",
            _json_edit(
                "model_weights_config.json",
                lambda c: c["config"]["fc1.weight"].update(use_pickle=True),
            ),
            "stored as a pickle",
        ),
        (
            "storage_read_as_another_dtype",
            _json_edit(
                "model_weights_config.json",
                lambda c: c["config"]["fc1.bias"].update(
                    path_name=c["config"]["fc1.weight"]["path_name"],
                    tensor_meta={**c["config"]["fc1.bias"]["tensor_meta"], "dtype": 2},
                ),
            ),
            "another dtype",
        ),
        (
            "guard_code",
            _json_edit("models/model.json", lambda m: m.update(guards_code=["import os"])),
            "guard code",
        ),
        (
            "symbolic_size",
            _json_edit(
                "models/model.json",
                lambda m: m["graph_module"]["graph"]["tensor_values"]["x"]["sizes"].__setitem__(
                    0, {"as_expr": {"expr_str": "s0"}}
                ),
            ),
            "symbolic",
        ),
        (
            "foreign_operator",
            _json_edit(
                "models/model.json",
                lambda m: m["graph_module"]["graph"]["nodes"][0].update(
                    target="torch.ops.aten.bitwise_xor.Tensor"
                ),
            ),
            "not on the allow-list",
        ),
        (
            "custom_operator",
            _json_edit(
                "models/model.json",
                lambda m: m["graph_module"]["graph"]["nodes"][0].update(
                    target="torch.ops.higher_order.cond"
                ),
            ),
            "not on the allow-list",
        ),
        (
            "extra_member",
            lambda m: m.update({"program/extra/payload.pkl": b"\x80\x04N."}),
            "unexpected archive member",
        ),
        (
            "short_payload",
            lambda m: m.update({"program/data/weights/weight_0": b"\0" * 12}),
            "reaches past the end of its storage",
        ),
        (
            "unreferenced_tensor",
            _json_edit(
                "model_weights_config.json",
                lambda c: c["config"].update(smuggled=c["config"]["fc1.weight"]),
            ),
            "does not take",
        ),
        (
            "two_inputs",
            _json_edit(
                "models/model.json",
                lambda m: m["graph_module"]["module_call_graph"][0]["signature"].update(
                    in_spec='[1, {"type": "builtins.tuple"}]'
                ),
            ),
            "exactly one tensor",
        ),
    ],
)
def test_the_check_refuses(
    honest_archive: Path, tmp_path: Path, name: str, edit: Callable[[Members], None], phrase: str
) -> None:
    bad = _rewrite(honest_archive, tmp_path / f"{name}.pt2", edit)
    with pytest.raises(CheckError) as caught:
        check_program(bad, tmp_path / "clean.pt2", EXPECT)
    assert phrase in caught.value.message


def test_zip_tricks_are_refused(honest_archive: Path, tmp_path: Path) -> None:
    deflated = _rewrite(
        honest_archive, tmp_path / "z.pt2", lambda m: None, compression=zipfile.ZIP_DEFLATED
    )
    with pytest.raises(CheckError, match="compressed"):
        check_program(deflated, tmp_path / "c.pt2", EXPECT)
    twice = tmp_path / "twice.pt2"
    with zipfile.ZipFile(honest_archive) as zf, zipfile.ZipFile(twice, "w") as out:
        for info in zf.infolist():
            out.writestr(info.filename, zf.read(info.filename))
        with pytest.warns(UserWarning):
            out.writestr(zf.infolist()[0].filename, b"\0" * 8)
    with pytest.raises(CheckError, match="twice"):
        check_program(twice, tmp_path / "c.pt2", EXPECT)
    small = Expect(EXPECT.input_shape, "regression", 0, max_bytes=1000)
    with pytest.raises(CheckError, match="at most"):
        check_program(honest_archive, tmp_path / "c.pt2", small)


def test_a_dynamic_batch_is_refused(tmp_path: Path) -> None:
    path = _export(
        _tiny(),
        (4, 1, 150, 150),
        tmp_path / "dyn.pt2",
        dynamic_shapes=({0: torch.export.Dim("batch", min=2, max=64)},),
    )
    with pytest.raises(CheckError, match="symbolic|static"):
        check_program(path, tmp_path / "c.pt2", EXPECT)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("mnist", (1, 28, 28)),
        ("cifar10", (3, 32, 32)),
        ("cifar10-resnet", (3, 32, 32)),
        ("correlation", (1, 150, 150)),
    ],
)
def test_reference_solutions_count_exactly_their_parameters(
    name: str, shape: tuple[int, ...], tmp_path: Path
) -> None:
    model = _load_reference(name)
    path = _export(model, (2, *shape), tmp_path / "program.pt2")
    classes = 0 if name == "correlation" else 10
    kind = "regression" if name == "correlation" else "classification"
    program, _ = check_program(
        path, tmp_path / "clean.pt2", Expect((2, *shape), kind, classes, 2**28)
    )
    count = count_program(program, 1024, input_width=shape[0])
    assert count.counted == count.parameters == sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers())
    assert count.norm_stats + count.unused == stats  # statistics (and unused counters), apart
    _same_outputs(model, tmp_path / "clean.pt2", (2, *shape))


def _same_outputs(model: Any, clean: Path, shape: tuple[int, ...]) -> None:
    """Phase B's interpreter gives the eager model's outputs."""
    x = torch.rand(shape)
    with torch.no_grad():
        expected = model.eval()(x)
    got = Program(clean, torch.device("cpu"))(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class _ManyOps(nn.Module):
    """Layers and functions beyond the references: norms, attention, multi-output ops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.gn, self.ln = nn.GroupNorm(2, 8), nn.LayerNorm(8)
        self.norm = nn.InstanceNorm2d(8, affine=True)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv(x), 0.1)
        y = F.gelu(self.gn(F.elu(self.up(y))))
        y = F.max_pool2d(F.silu(self.norm(y)), 4)
        t = self.ln(y.flatten(2).transpose(1, 2))
        t, _ = self.att(t, t, t)
        u = self.bn(t.mean(1))
        top, _ = torch.max(u, 1, keepdim=True)
        a, b = torch.split(u, 4, dim=1)
        var, mean = torch.var_mean(u, 1, keepdim=True)
        z = torch.zeros(u.shape[0], 4, device=u.device)
        feats = torch.cat([a * top, b + var + mean + z, torch.where(u > 0, u, 0.0)[:, :8]], 1)
        return F.log_softmax(self.head(feats), 1)


def test_phase_b_interpreter_runs_many_operators(tmp_path: Path) -> None:
    model = _ManyOps()
    path = _export(model, (3, 3, 32, 32), tmp_path / "program.pt2")
    check_program(path, tmp_path / "clean.pt2", Expect((3, 3, 32, 32), "classification", 10, 2**26))
    _same_outputs(model, tmp_path / "clean.pt2", (3, 3, 32, 32))


# -- the corpus, graded end to end -----------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every case graded in one batch on the process backend (the slow part, done once)."""
    from harness.data import prepare_split
    from harness.tasks import load_task

    root = tmp_path_factory.mktemp("cheats")
    tasks = root / "tasks"
    build_cheats.write_tasks(tasks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_TASKS", str(tasks))
        mp.setenv("HARNESS_CACHE", str(root / "cache"))
        mp.setenv("HARNESS_SECRET_SEED", "99")
        settings.cache_clear()
        task = load_task(build_cheats.TASK, tasks)
        hidden = prepare_split(task, task.splits.hidden)
        folders = build_cheats.build(root / "submissions", hidden.images(), hidden.labels())
        options = GradeOptions(
            sandbox="process", results_dir=root / "results", reports=False, tasks_dir=tasks, jobs=2
        )
        docs = {d.team: d for d in grade([root / "submissions"], options=options)}
        yield {
            "docs": docs,
            "folders": folders,
            "task": task,
            "labels": hidden.labels(),
            "options": options,
            "root": root,
        }
    settings.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("case", build_cheats.CASES, ids=lambda c: c.name)
def test_each_trick_ends_in_its_status_named(corpus: dict[str, Any], case: Any) -> None:
    doc = corpus["docs"][case.name]
    assert doc.status == case.expect, (doc.status, doc.message)
    if case.flag:
        flags = [f.message for f in doc.flags if f.code == case.flag]
        assert flags and case.says in flags[0], (case.flag, doc.flags)
    elif case.says:
        assert case.says in doc.message, doc.message
    if case.count is not None:
        assert doc.params.counted == case.count and doc.params.verified
    if case.expect == "graded" and not case.flag:
        bad = {"count_mismatch", "tensors_outside_weights", "nondeterministic", "memorization"}
        assert not bad & {f.code for f in doc.flags}, doc.flags


@pytest.mark.slow
def test_the_split_is_predicted_again_unless_the_graph_proves_it_needless(
    corpus: dict[str, Any],
) -> None:
    """Phase B re-runs the whole split in another order exactly when the check could not
    prove each image's output independent of the batch; every trick the re-run flags was
    left unproved, and most honest programs skip it."""
    skipped = 0
    for case in build_cheats.CASES:
        doc = corpus["docs"][case.name]
        proof = doc.details.get("integrity", {}).get("batch_independent")
        if doc.status != "graded" or proof is None:
            continue
        assert ("determinism_s" in doc.timing) is (not proof["proven"]), (case.name, proof)
        skipped += proof["proven"]
        if case.flag == "nondeterministic":
            assert not proof["proven"], case.name
    assert skipped >= 3


@pytest.mark.slow
def test_an_eager_fallback_is_marked_unverified(corpus: dict[str, Any]) -> None:
    doc = corpus["docs"]["hash_lookup_eager"]
    assert doc.params.verified is False
    unverified = [f for f in doc.flags if f.code == "unverified_count"]
    assert unverified and unverified[0].audience == "student"
    assert doc.metrics["mse"] < 1e-6  # the lookup is perfect on the inputs it memorized
    verified = corpus["docs"]["honest"]
    assert verified.params.verified
    assert not any(f.code == "unverified_count" for f in verified.flags)


@pytest.mark.slow
def test_failed_exports_show_the_error_only_to_the_instructor(corpus: dict[str, Any]) -> None:
    doc = corpus["docs"]["hash_lookup"]
    assert doc.stage == "export" and "could not be exported" in doc.message
    assert "numpy" in doc.message  # the export error's first line, written by torch
    assert "Traceback" not in doc.message and "Traceback" in doc.student_output


@pytest.mark.slow
def test_the_model_is_not_imported_for_predictions(corpus: dict[str, Any]) -> None:
    """Phase B runs the checked program only: the honest team's module was imported once
    (phase A), and phase B's job mounted no submission."""
    root: Path = corpus["root"]
    marker = root / "imports.log"
    folder = root / "extra" / "counting"
    folder.mkdir(parents=True)
    honest = corpus["folders"]["honest"]
    (folder / "weights.safetensors").write_bytes((honest / "weights.safetensors").read_bytes())
    manifest = (honest / "submission.toml").read_text()
    (folder / "submission.toml").write_text(manifest.replace('"honest"', '"counting"'))
    text = (honest / "model.py").read_text()
    (folder / "model.py").write_text(f"open({str(marker)!r}, 'a').write('import\\n')\n" + text)
    [doc] = grade([folder], options=corpus["options"])
    assert doc.status == "graded", doc.message
    assert marker.read_text().splitlines() == ["import"]


@pytest.mark.slow
def test_duplicates_report_names_copied_and_disguised_weights(corpus: dict[str, Any]) -> None:
    from harness import integrity

    docs = list(corpus["docs"].values())
    findings = integrity.duplicates(corpus["task"], docs, corpus["labels"])
    pairs = {(f.kind, frozenset(f.teams)) for f in findings}
    assert ("identical_weights", frozenset({"honest", "copied_weights"})) in pairs
    assert ("near_identical_weights", frozenset({"honest", "near_copy"})) in pairs
    assert ("prediction_agreement", frozenset({"honest", "copied_weights"})) in pairs
    assert not any("tied_weights" in f.teams and f.kind == "identical_weights" for f in findings)
    path = integrity.write_report(corpus["task"], corpus["root"] / "results", corpus["labels"])
    report = json.loads(path.read_text())
    assert report["audience"] == "instructor" and report["findings"]


@pytest.mark.slow
def test_the_daily_quota_stops_hidden_gradings_but_not_checks(corpus: dict[str, Any]) -> None:
    from harness import integrity
    from harness.api import check
    from harness.errors import UserError
    from harness.store import ResultsStore

    task = corpus["task"]
    quota = task.model_copy(update={"grading": task.grading.model_copy(update={"daily_quota": 1})})
    rows = ResultsStore(corpus["root"] / "results").history("honest", task.id)
    with pytest.raises(UserError, match="used its 1 hidden-set grading"):
        integrity.check_quota(quota, "honest", rows)
    integrity.check_quota(task, "honest", rows)  # no quota: no limit
    two = task.model_copy(update={"grading": task.grading.model_copy(update={"daily_quota": 2})})
    integrity.check_quota(two, "honest", rows)
    toml = Path(task.source)
    toml.write_text(toml.read_text().replace("[grading]", "[grading]\ndaily_quota = 1"))
    options = corpus["options"]
    forced = dataclasses.replace(options, force=True)
    before = grade([corpus["folders"]["honest"]], options=options)[0]
    # over quota: not graded again, the batch goes on, the last result stands with a note
    [again, other] = grade(
        [corpus["folders"]["honest"], corpus["folders"]["tied_weights"]], options=forced
    )
    assert again.graded_at == before.graded_at and again.metrics == before.metrics
    assert any(f.code == "quota" and f.audience == "student" for f in again.flags)
    assert other.team == "tied_weights" and other.status == "graded"
    [doc] = check([corpus["folders"]["honest"]], options=forced)
    assert doc.status == "graded"


@pytest.mark.slow
def test_the_correlation_reference_counts_exactly_its_parameters(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    (tasks / "correlation").mkdir(parents=True)
    text = (ROOT / "tasks" / "correlation" / "task.toml").read_text()
    for key, value in (("train_size", 20000), ("validation_size", 2000), ("test_size", 5000)):
        text = text.replace(f"{key} = {value}", f"{key} = 24")
    (tasks / "correlation" / "task.toml").write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
        mp.setenv("HARNESS_SECRET_SEED", "5")
        settings.cache_clear()
        # the task is a copy, so the repository's folder is not its declared reference: the
        # roster gives the folder its manifest's team, as `grade validate-references` does
        roster = tmp_path / "roster.csv"
        roster.write_text("folder,team\ncorrelation,reference\n")
        options = GradeOptions(
            sandbox="process",
            results_dir=tmp_path / "results",
            reports=False,
            tasks_dir=tasks,
            roster=roster,
        )
        [doc] = grade([ROOT / "reference_solutions" / "correlation"], options=options)
    settings.cache_clear()
    model = _load_reference("correlation")
    assert doc.status == "graded", doc.message
    assert doc.params.verified
    assert doc.params.counted == sum(p.numel() for p in model.parameters()) == 1_048_929
    assert doc.params.model_reported == 1_048_929 and doc.params.buffers == 17
    assert not {"count_mismatch", "tensors_outside_weights"} & {f.code for f in doc.flags}
    assert np.isfinite(doc.metrics["mse"])


def test_a_forged_report_from_a_hidden_eager_run_shows_no_text(tmp_path: Path) -> None:
    """Submission code that saw hidden inputs can rewrite its report: in grade mode the
    message keeps harness words only, whatever the report claims."""
    from harness.sandbox import RunOutcome
    from harness.verdicts import interpret_run

    secret = "hidden input 0 has mean 0.4312"
    for etype, stage in (
        ("OutputError", "predict"),
        ("ExportError", "export"),
        (secret[:40], "predict"),
    ):
        report = {
            "ok": False,
            "stage": stage,
            "error": {"stage": stage, "type": etype, "message": secret, "traceback": ""},
        }
        (tmp_path / "report.json").write_text(json.dumps(report))
        outcome = RunOutcome(
            status="error", exit_code=3, wall_seconds=1.0, log="", output_dir=tmp_path
        )
        hidden = interpret_run(outcome, "eager", show_text=False)
        shown = interpret_run(outcome, "eager")
        assert hidden is not None and shown is not None
        assert "0.4312" not in hidden.message and hidden.status == "failed"
        assert "0.4312" in shown.message and "0.4312" in hidden.output  # instructor's view


def test_malformed_programs_are_refused_not_crashed_on(
    honest_archive: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"PK\x03\x04" + b"\0" * 200)
    with pytest.raises(CheckError, match="not a valid zip"):
        check_program(garbage, tmp_path / "c.pt2", EXPECT)
    odd = _rewrite(
        honest_archive,
        tmp_path / "odd.pt2",
        _json_edit("models/model.json", lambda m: m["graph_module"]["graph"].update(inputs="x")),
    )
    with pytest.raises(CheckError, match="malformed"):
        check_program(odd, tmp_path / "c.pt2", EXPECT)


@pytest.mark.slow
def test_canaries_from_the_secret_seed_are_mixed_in_and_scored(corpus: dict[str, Any]) -> None:
    """Canaries drawn from the secret seed are shuffled into the hidden inputs and scored
    apart: an honest model scores alike on both, a memorized lookup does not."""
    honest = corpus["docs"]["honest"]
    probe = honest.details["integrity"]["probe"]
    assert {"clean", "noisy", "hidden", "canary"} <= set(probe)
    assert probe["hidden"] == pytest.approx(honest.metrics["mse"])
    assert not any(f.code == "memorization" for f in honest.flags)
    lookup = corpus["docs"]["nn_lookup"]
    assert lookup.metrics["mse"] < 1e-6  # perfect on the hidden images it memorized
    scores = lookup.details["integrity"]["probe"]
    assert scores["canary"] > 0.05  # the canaries give it away
    assert abs(scores["noisy"] - scores["clean"]) < 1e-3  # noise alone misses it


def test_weights_evidence_reads_each_tensor_without_copies(tmp_path: Path) -> None:
    """The digest and the sketch of a file's tensors, as a plain reading computes them,
    with no copy of a tensor beyond the bytes read (two gradings do this at once)."""
    import hashlib
    import tracemalloc

    from safetensors.torch import save_file

    from harness.integrity import SKETCH_MIN, SKETCH_VALUES, _shape_seed, weights_evidence
    from harness.safetensors_header import FLOAT_DTYPES, read_header, read_tensor

    path = tmp_path / "w.safetensors"
    tensors = {
        "big": torch.randn(2_000_000),  # 8 MB
        "half": torch.randn(40, 30).half(),
        "bf16": torch.randn(300).bfloat16(),
        "fp8": torch.randn(20, 20).to(torch.float8_e4m3fn),
        "mask": torch.ones(7, dtype=torch.bool),
        "scalar": torch.tensor(2.5),
        "steps": torch.arange(9),
    }
    save_file(tensors, str(path))
    header = read_header(path)
    tracemalloc.start()
    try:
        evidence = weights_evidence(header)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20  # the 8 MB read; before, 40 MB (two copies and a float64 one)
    digest, sketch = hashlib.sha256(), {}
    for entry in sorted(header.tensors, key=lambda t: t.name):
        values = read_tensor(path, entry)
        digest.update(f"{entry.name}|{entry.dtype}|{entry.shape}|".encode())
        digest.update(np.ascontiguousarray(values).tobytes())
        if entry.dtype in FLOAT_DTYPES and entry.numel >= SKETCH_MIN:
            flat = values.reshape(-1).astype(np.float64)
            rng = np.random.default_rng(_shape_seed(entry.shape))
            picks = rng.choice(entry.numel, size=SKETCH_VALUES, replace=False)
            sketch[entry.name] = [round(float(v), 6) for v in flat[picks]]
    assert evidence["weights_sha256"] == digest.hexdigest()
    assert evidence["sketch"] == sketch and set(sketch) == {"big", "half", "bf16", "fp8"}
