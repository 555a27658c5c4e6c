"""Unit tests: JSON repair, item schema, atomic writes, the report without matplotlib, and the doctests."""

from __future__ import annotations

import builtins
import doctest
import importlib
import json
import os
from pathlib import Path

import pytest

from synthetic.evolution.jsonrepair import JSONRepairError, parse_json
from synthetic.evolution.report import format_table, round_stats, verb_noun, write_report
from synthetic.evolution.schema import validate_item
from synthetic.storage import PartStore, atomic_write_json

ITEM = {"objects": ["cup"], "skills": ["counting"], "format": "short answer", "question": "How many cups?",
        "steps": [{"manipulation": "None", "description": "Count."}], "answer": "2"}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expect", "value", "note"),
    [
        (json.dumps(ITEM), dict, ITEM, None),
        ("Sure:\n```json\n" + json.dumps(ITEM) + "\n```\nHope this helps", dict, ITEM, "code fence"),
        ('{"a": 1, "b": [1, 2,],}', dict, {"a": 1, "b": [1, 2]}, "trailing comma"),
        ("{'a': 'it\\'s', 'b': True, 'c': None}", dict, {"a": "it's", "b": True, "c": None}, "single quotes"),
        ('{a: 1, b: "x"}', dict, {"a": 1, "b": "x"}, "unquoted key"),
        ('{"a": 1 "b": 2}', dict, {"a": 1, "b": 2}, "missing comma"),
        ('{"a": "line\nbreak"} // done', dict, {"a": "line\nbreak"}, "control character in string"),
        ('{"steps": [{"description": "look', dict, {"steps": [{"description": "look"}]}, "truncated"),
        ('{"id": "1"}\n{"id": "2"}', list, [{"id": "1"}, {"id": "2"}], "collected objects into list"),
        ('{"verdicts": [{"id": "1"}]}', list, [{"id": "1"}], "unwrapped list from object"),
        ('[{"a": 1}]', dict, {"a": 1}, "unwrapped single-item list"),
    ],
)
def test_parse_json_repairs(text: str, expect: type, value: object, note: str | None) -> None:
    got = parse_json(text, expect=expect)
    assert got.value == value
    assert (note in got.notes) if note else not got.repaired


@pytest.mark.parametrize("text", ["I cannot help with that.", "", '"just a string"', "[1, 2]"])
def test_parse_json_rejects_what_it_cannot_recover(text: str) -> None:
    with pytest.raises(JSONRepairError):
        parse_json(text, expect=dict)


def test_validate_item_coerces_losslessly_and_reports_errors() -> None:
    item, errors = validate_item(
        {**ITEM, "answer": 2, "skills": "counting", "steps": [{"manipulation": None, "description": "d"}]}
    )
    assert (
        errors == []
        and item["answer"] == "2"
        and item["skills"] == ["counting"]
        and item["steps"][0]["manipulation"] == "None"
    )
    _, errors = validate_item(
        {k: v for k, v in ITEM.items() if k != "question"}
        | {"steps": [{"manipulation": "x"}], "objects": {"a": 1}}
    )
    assert any("missing field(s) ['question']" in e for e in errors)
    assert any("steps[0]" in e for e in errors) and any("'objects'" in e for e in errors)
    assert validate_item({**ITEM, "answer": "  "})[1] == ["'answer' is empty"]


def test_atomic_write_leaves_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # the temp file was removed


def test_part_store_ignores_leftover_temp_files(tmp_path: Path) -> None:
    store = PartStore(tmp_path)
    store.write([{"id": "a"}])
    (tmp_path / ".part-000001-dead.jsonl.123.tmp").write_text(
        '{"id": "b", "half'
    )  # what a kill mid-write leaves
    store.write([{"id": "c"}])
    assert sorted(store.load()) == ["a", "c"]


def test_verb_noun_heuristic() -> None:
    assert verb_noun("Describe the dog in the picture.") == ("describe", "dog")
    assert verb_noun("Counting the chairs, how many are there?") == ("count", "chairs")
    assert verb_noun("Please identify which bus is red") == ("identify", "bus")
    assert verb_noun("Is it raining?") is None


def test_report_table_works_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    cands = [{"status": "ok", "repairs": [], "item": ITEM, "kept": True,
              "judge": {"improved": True, "score": 8, "status": "ok"}},
             {"status": "invalid_json", "repairs": [], "item": None, "kept": False, "judge": None}]  # fmt: skip
    rows = round_stats([ITEM, ITEM], [(2, cands)])
    report = write_report(rows, tmp_path)
    assert report["plot"] is None and not (tmp_path / "report.png").exists()
    text = (tmp_path / "report.md").read_text()
    assert "matplotlib is not installed" in text and text.count("\n| ") == 4  # header, rule, rounds 0 and 1
    assert rows[1]["kept_pct"] == 50.0 and rows[1]["invalid_json"] == 1 and rows[1]["verb_noun"] == 0
    assert "| 1 | 2 | 2 | 1 | 0 |" in format_table(rows)


@pytest.mark.parametrize(
    "module",
    ["synthetic.storage", "synthetic.teachers.base", "synthetic.teachers.cache", "synthetic.teachers.cli",
     "synthetic.evolution.jsonrepair", "synthetic.evolution.schema", "synthetic.evolution.prompts",
     "synthetic.evolution.judge", "synthetic.evolution.report", "synthetic.syphus.serializers",
     "synthetic.syphus.prompts", "synthetic.syphus.mimicit", "synthetic.syphus.translate",
     "synthetic.world.build"],
)  # fmt: skip
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
