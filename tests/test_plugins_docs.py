"""docs/plugins.md runs as written: the parameter count, the user plug-in saved as my_plugins.py (outside
vpgkit), its use from Python, its recipe trained by `python -m vpgkit.train`, published and loaded back."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from vpgkit.config import ModelConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block with a language, in page order."""
    return re.findall(r"```(python|bash|yaml)\n(.*?)```", text, re.S)


def test_every_block_of_the_page_runs_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = []
    for language, code in blocks(PAGE.read_text()):
        if language == "yaml" and code.startswith("# @package _global_"):
            (tmp_path / "recipes" / "recipe").mkdir(parents=True, exist_ok=True)
            (tmp_path / "recipes" / "recipe" / "slot_offset.yaml").write_text(code)
        elif language == "yaml":  # a model snippet: it must fit the schema
            OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.create(code)["model"])
        elif language == "python" and code.startswith('"""my_plugins.py'):
            (tmp_path / "my_plugins.py").write_text(code)
        elif language == "python":
            exec(compile(code, str(PAGE), "exec"), {"__name__": "__doc_example__"})
        else:
            for argv in (shlex.split(line) for line in code.splitlines() if line.strip()):
                assert argv[:2] == ["python", "-m"], argv
                done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True)
                assert done.returncode == 0, done.stderr[-3000:]
                ran.append(argv[2])
    assert ran == ["vpgkit.train", "vpgkit.publish", "vpgkit.publish"]
    out = capsys.readouterr().out
    assert "5310464" in out and "['slot_offset.offset']" in out
    assert "adapter load from published/slot_offset: 1 tensors loaded" in out
    config = (tmp_path / "published" / "slot_offset" / "vpgkit_config.json").read_text()
    assert '"slot_offset": {' in config and '"slot_offset": "slot_offset"' in config
