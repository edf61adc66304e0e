"""generate --structure: a cache that computes the first / last blocks every step, refused before sampling when
it would leave nothing to cache."""

import subprocess
import sys

CLI = [sys.executable, "-m", "cachepilot.cli"]


def _generate(tmp_path, *extra):
    return subprocess.run([*CLI, "generate", "--classes", "0", "1", "--steps", "6", "--out", str(tmp_path / "g.png"),
                           *extra], capture_output=True, text=True, timeout=300)


def test_generate_with_a_structure_counts_its_blocks(tmp_path):
    done = _generate(tmp_path, "--policy", "fixed:3", "--structure", "F1B0")
    assert done.returncode == 0, done.stderr
    # 6 blocks, 6 steps, fixed:3 computes 2: (6 x 1 + 2 x 5) / 36 = 0.44
    assert "compute fraction 0.44" in done.stdout


def test_bad_structures_are_one_line_errors_before_sampling(tmp_path):
    for structure, words in (("F6B0", "nothing is left to cache"), ("F1", "unknown structure spec")):
        done = _generate(tmp_path, "--policy", "fixed:3", "--structure", structure)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
        assert "full compute" not in done.stdout and not (tmp_path / "g.png").exists()
    done = _generate(tmp_path, "--structure", "F1B0")
    assert done.returncode == 2 and "--policy" in done.stderr
