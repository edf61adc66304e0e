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
    for structure, words in (("F6B0", "nothing is left to cache"), ("F1", "unknown structure spec"),
                             ("G2,2", "must add up to 6")):
        done = _generate(tmp_path, "--policy", "fixed:3", "--structure", structure)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
        assert "full compute" not in done.stdout and not (tmp_path / "g.png").exists()
    done = _generate(tmp_path, "--structure", "F1B0")
    assert done.returncode == 2 and "--policy" in done.stderr


def test_generate_with_groups_runs_a_policy_per_group(tmp_path):
    done = _generate(tmp_path, "--policy", "fixed:3|always", "--structure", "G2,4")
    assert done.returncode == 0, done.stderr
    # 6 steps: the first 2 blocks at 2 steps, the last 4 at every step: (2 x 2 + 4 x 6) / 36 = 0.78
    assert "compute fraction 0.78" in done.stdout and "fixed:3|always" in done.stdout


def test_a_learned_policy_with_groups_is_refused_before_sampling(tmp_path):
    done = _generate(tmp_path, "--policy", "learned:0.3", "--structure", "G3,3")
    assert done.returncode == 2 and "give --predictor per group" in done.stderr
    assert "full compute" not in done.stdout
