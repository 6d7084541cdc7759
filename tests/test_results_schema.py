"""The result document is a public interface: its JSON schema ships in docs/ and must
match the code, and the field names --json users rely on stay."""

from __future__ import annotations

import json
from pathlib import Path

from harness.results import SCHEMA_VERSION, ResultDocument, json_schema, read_result, write_result

SHIPPED = Path(__file__).resolve().parent.parent / "docs" / "result.schema.json"
PROMISED = {
    "schema_version",
    "task",
    "team",
    "status",
    "message",
    "metrics",
    "details",
    "intervals",
    "params",
    "timing",
    "submission_hash",
    "harness_version",
    "graded_at",
}


def test_shipped_schema_matches_the_code() -> None:
    assert json.loads(SHIPPED.read_text()) == json.loads(json.dumps(json_schema())), (
        "regenerate docs/result.schema.json (see tests/test_results_schema.py)"
    )


def test_promised_fields_stay() -> None:
    fields = set(ResultDocument.model_fields)
    assert fields >= PROMISED
    assert {"counted", "limit", "buffers", "per_layer"} <= set(
        json_schema()["$defs"]["Params"]["properties"]
    )


def test_round_trip_and_corrupt_documents(tmp_path: Path) -> None:
    doc = ResultDocument(task="t", team="a", status="graded", metrics={"mse": 0.5})
    path = write_result(tmp_path, doc)
    assert read_result(path) == doc and doc.schema_version == SCHEMA_VERSION
    path.write_text(path.read_text()[:40])  # truncated
    assert read_result(path) is None
    path.write_text(json.dumps({**json.loads(doc.to_json()), "schema_version": 99}))
    assert read_result(path) is None
