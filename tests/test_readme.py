"""The README's examples run as printed: the library program of "Use the penalty in your
own WGAN" is extracted from README.md and executed in a fresh interpreter."""

import re
import subprocess
import sys

from conftest import ROOT


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    assert f"\n## {title}\n" in text, f"README.md has no section {title!r}"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_library_example_runs_as_printed(tmp_path):
    blocks = re.findall(
        r"```python\n(.*?)```", readme_section("Use the penalty in your own WGAN"), re.S
    )
    assert len(blocks) == 1, "one complete program, not fragments"
    program = tmp_path / "example.py"
    program.write_text(blocks[0])
    env_path = f"{ROOT}"
    proc = subprocess.run(
        [sys.executable, str(program)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warning: the example's images are in [-1, 1]
    numbers = re.fullmatch(
        r"critic loss (\S+), W2 penalty (\S+), mean sqrt\(g\^T L~ g\) (\S+), "
        r"generator loss (\S+)\n",
        proc.stdout,
    )
    assert numbers, proc.stdout
    critic_loss, penalty, norm, _ = map(float, numbers.groups())
    # A fresh critic's Def. 10 norm is far from the target 1, so the penalty dominates the
    # loss: lam * (norm - 1)^2 averaged over samples is at least lam * (mean norm - 1)^2.
    assert norm > 1 and penalty >= 10.0 * (norm - 1) ** 2 * (1 - 1e-6)
    assert abs(critic_loss - penalty) < 1.0
