"""The README's set-up commands, CI and the docs stay in step with each other and with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must open with a bash block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_setup_commands():
    main_job, tests = readme_commands()
    assert "python -m vpgkit.train recipe=vpgc" in main_job
    assert tests.endswith("pytest")
    assert all(line.startswith("pip install torch==2.14.1 torchvision==0.29.1") for line in (main_job, tests))


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


# docs/plugins.md is run by tests/test_plugins_docs.py, which first saves its my_plugins.py block as a file.
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "plugins.md")]


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_documentation_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files (docs/own_data.md) write them here
    for code in python_blocks(path):
        exec(compile(code, str(path), "exec"), {"__name__": "__doc_example__"})
