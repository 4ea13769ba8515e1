"""docs/guide.md's examples run as written, under whatever interpreter runs this suite."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guide.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_example_runs(index, tmp_path):
    if 'Run("distributed"' in BLOCKS[index]:
        pytest.importorskip("distributed", reason="the distributed flavor's example needs Dask's distributed "
                            "(optional; scripts/bootstrap installs it for the project's own runtimes)")
    script = tmp_path / f"guide_example_{index}.py"
    script.write_text(BLOCKS[index])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(GUIDE.parents[1] / "stdlib-shims")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
