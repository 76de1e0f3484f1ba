"""The package metadata setuptools builds: an SPDX license string (no deprecation banner on install) and
the version taken from ``streamlstm.__version__`` (one place)."""

from __future__ import annotations

import shutil
import warnings
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_has_an_spdx_license_and_the_package_version(tmp_path, monkeypatch) -> None:
    build_meta = pytest.importorskip("setuptools.build_meta")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "streamlstm", source / "streamlstm", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(source)
    out = tmp_path / "meta"
    out.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        directory = build_meta.prepare_metadata_for_build_wheel(str(out))
    metadata = Parser().parsestr((out / directory / "METADATA").read_text())
    import streamlstm

    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Version"] == streamlstm.__version__
    assert not [w for w in caught if "license" in str(w.message).lower()]
