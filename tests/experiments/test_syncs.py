"""bench/syncs on the CPU: no syncs to count, but the cached and full calls run and compare (the CUDA count
itself needs a GPU: `python -m experiments.syncs` on one)."""

import torch

from experiments import syncs


def test_syncs_compares_a_cached_call_with_full_compute_on_cpu():
    torch.manual_seed(0)
    result = syncs.main(["--device", "cpu", "--policy", "fixed:2", "--steps", "4", "--samples", "2"])
    assert result["syncs_full"] == result["syncs_cached"] == 0  # nothing counted without CUDA
    assert result["compute_fraction"] == 0.5  # steps 0 and 2 of 4
    assert result["output_device"] == "cpu" and result["max_abs_diff"] > 0
    assert 0 < result["psnr_db_of_batch_mse"] < 100 and result["psnr_db_mean_per_image"] >= result["psnr_db_of_batch_mse"]


def test_count_syncs_without_cuda_returns_the_result():
    out, count, where = syncs.count_syncs(lambda: 7)
    assert (out, count, dict(where)) == (7, 0, {})
