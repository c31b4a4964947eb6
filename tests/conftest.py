"""Shared fixtures: the repository root, the demo experiment, helpers to write experiment files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_EXPERIMENT = REPO_ROOT / "configs" / "experiments" / "demo.yaml"
SAT_CONFIGS = REPO_ROOT.parent / "shared" / "sat_configs"


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """write_yaml("name.yaml", {...}) or write_yaml("name.yaml", "raw text") -> path under tmp_path."""

    def write(name: str, content: object) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def minimal() -> dict:
    """The smallest valid experiment."""
    return {"name": "tiny", "paths": {"audio_dir": "audio"}}
