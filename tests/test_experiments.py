"""Every shipped experiment file is a valid comparison whose header names the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dress.comparison import CompareConfig, plan

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


def test_there_are_cpu_and_paper_variants_of_each_experiment():
    names = {p.name for p in EXPERIMENTS}
    stems = {n.split(".")[0] for n in names}
    assert len(stems) >= 6
    for stem in stems:
        assert {f"{stem}.cpu.yaml", f"{stem}.paper.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_plans_and_names_its_command(path):
    text = path.read_text()
    run_lines = [line for line in text.splitlines() if line.startswith("# Run: ")]
    assert len(run_lines) == 1, "the header names exactly one command, on a '# Run: ' line"
    assert f"dress compare --config experiments/{path.name}" in run_lines[0]
    entries = plan(CompareConfig.model_validate(yaml.safe_load(text)))
    assert entries and len({e.key for e in entries}) == len(entries)
