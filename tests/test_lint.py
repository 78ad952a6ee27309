import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))


@pytest.mark.skipif(not Path(ruff).exists(), reason="ruff is in the dev extra")
@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff(args):
    proc = subprocess.run(
        [ruff, *args, "llm4sbr", "kernels", "tests", "bench", "setup.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
