"""docs/own_data.md runs as written: its Python blocks write the example datasets and its
`python -m vpgkit.train` commands train on them (issue 16, item 4)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own_data.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block with a language, in page order."""
    return re.findall(r"```(python|bash)\n(.*?)```", text, re.S)


def commands(bash: str) -> list[list[str]]:
    joined = bash.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


def test_every_block_of_the_page_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = []
    for language, code in blocks(PAGE.read_text()):
        if language == "python":
            exec(compile(code, str(PAGE), "exec"), {"__name__": "__doc_example__"})
            continue
        for argv in commands(code):
            assert argv[:3] == ["python", "-m", "vpgkit.train"], argv
            done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
            ran.append(next(a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")))
    assert ran == ["runs/llava", "runs/mimicit", "runs/demon"]
    for run in [*ran, "runs/mixed"]:
        config = json.loads((tmp_path / run / "adapter" / "vpgkit_config.json").read_text())
        assert config["trainable"]["parts"] == ["vpgc"]
        assert "step 2: checkpoint" in (tmp_path / run / "train.log").read_text()
