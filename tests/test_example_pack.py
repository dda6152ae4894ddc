"""A stranger's pack: pip-install examples/adapt-example-pack (into a folder of its own), see it
in `adapt plugins`, train with it, and run its own tests (contract checks included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from adapt.testing import run_adapt

PACK = Path(__file__).resolve().parent.parent / "examples" / "adapt-example-pack"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PACK)], check=True, capture_output=True)
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_pack_installs_and_is_listed(installed: dict[str, str]) -> None:
    result = run_adapt("plugins", "--json", env=installed)
    assert result.returncode == 0, result
    pack = next(p for p in json.loads(result.stdout) if p["distribution"] == "adapt-example-pack")
    assert (pack["version"], pack["tasks"], pack["methods"], pack["errors"]) == ("0.1.0", ["text_regression"], ["bitfit"], [])


def test_pack_uses_only_the_public_api() -> None:
    sources = "\n".join(p.read_text() for p in PACK.rglob("*.py"))
    assert "adapt_nlp" not in sources and "adapt_methods" not in sources
    imported = {line.split()[1].split(".")[:2][-1] for line in sources.splitlines()
                if line.startswith(("from adapt.", "import adapt."))}
    assert imported <= {"testing"}, imported


def test_pack_own_tests_pass(installed: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **installed, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(PACK),
                             str(PACK / "tests")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout
