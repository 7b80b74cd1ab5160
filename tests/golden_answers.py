"""The answers captured before the structure change (tests/golden/README.md), and the
check that an answer of today is a superset of one of them: every key the golden answer
had is still there, at every depth. Values may differ (ids, times, metrics); so may the
values of ``stage``, the only renamed thing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
ANSWERS: dict[str, Any] = json.loads((GOLDEN_DIR / "answers.json").read_text())
CLI_HELP: dict[str, str] = json.loads((GOLDEN_DIR / "cli_help.json").read_text())
# JSON-encoded fields of a raw Redis job record.
RECORD_JSON_FIELDS = ("spec", "progress", "result", "error", "stages")


def missing_keys(golden: Any, answer: Any, where: str = "", dataset: str = "golden") -> list[str]:
    """Paths of keys the golden answer has and ``answer`` lacks. Lists are compared by
    their first items (records of one shape). Keys that name the golden run's dataset
    (report artefacts) are looked up with ``dataset`` in its place."""
    if isinstance(golden, dict):
        if not isinstance(answer, dict):
            return [f"{where or '.'}: a {type(answer).__name__}, not an object"]
        problems = []
        for key, value in golden.items():
            key_now = key.replace("-golden-", f"-{dataset}-")
            problems += ([f"{where}.{key}"] if key_now not in answer else
                         missing_keys(value, answer[key_now], f"{where}.{key}", dataset))
        return problems
    if isinstance(golden, list) and golden and isinstance(golden[0], (dict, list)):
        if not isinstance(answer, list):
            return [f"{where or '.'}: a {type(answer).__name__}, not a list"]
        return missing_keys(golden[0], answer[0], f"{where}[0]", dataset) if answer else []
    return []


def decoded_record(raw: dict[str, str]) -> dict[str, Any]:
    """A raw Redis job record with its JSON fields parsed."""
    return {key: json.loads(value) if key in RECORD_JSON_FIELDS else value for key, value in raw.items()}


def assert_superset(name: str, answer: Any, dataset: str = "golden") -> None:
    golden = ANSWERS[name]
    if name.startswith("redis_job_record"):
        golden, answer = decoded_record(golden), decoded_record(answer)
    problems = missing_keys(golden, answer, dataset=dataset)
    assert not problems, f"today's answer lacks what the golden {name} had: {problems}"
