"""Non-finite images, features and weights end in a clear error, never a segfault or a NaN figure."""

import subprocess
import sys

import pytest
import torch

from cachepilot.embedded.digits.metrics import class_accuracy, frechet_distance
from cachepilot.errors import CachepilotError
from cachepilot.quality import psnr, ssim


def _nan_images(n=8):
    images = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    images[3, 0, 2, 2] = float("nan")
    return images


def test_frechet_distance_of_nan_images_is_a_clear_error(classifier):
    clean = torch.rand(8, 1, 8, 8)
    with pytest.raises(CachepilotError, match="generated images .* non-finite"):
        frechet_distance(classifier, _nan_images(), clean)
    with pytest.raises(CachepilotError, match="reference images .* non-finite"):
        frechet_distance(classifier, clean, _nan_images())
    inf = clean.clone()
    inf[0, 0, 0, 0] = float("inf")
    with pytest.raises(CachepilotError, match="1 inf"):
        frechet_distance(classifier, inf, clean)
    with pytest.raises(CachepilotError, match="non-finite"):
        class_accuracy(classifier, _nan_images(), torch.zeros(8, dtype=torch.long))


def test_frechet_distance_of_nan_does_not_crash_the_process():
    """The unfixed code segfaults (exit 139) inside torchmetrics' FID: run it in a child process."""
    code = ("import torch\nfrom cachepilot.embedded.digits.loading import load_classifier\n"
            "from cachepilot.embedded.digits.metrics import frechet_distance\nfrom cachepilot.errors import CachepilotError\n"
            "x = torch.full((6, 1, 8, 8), float('nan'))\n"
            "try:\n    frechet_distance(load_classifier(), x, torch.rand(6, 1, 8, 8))\n"
            "except CachepilotError as err:\n    print('CLEAR', err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "CLEAR" in done.stdout, (done.returncode, done.stderr[-500:])


def test_psnr_and_ssim_of_nan_are_errors():
    clean = torch.rand(4, 1, 8, 8)
    with pytest.raises(CachepilotError, match="PSNR"):
        psnr(_nan_images(4), clean)
    with pytest.raises(CachepilotError, match="PSNR"):
        psnr(clean, _nan_images(4))
    with pytest.raises(CachepilotError, match="SSIM"):
        ssim(_nan_images(4), clean)


@pytest.mark.parametrize("argv", [
    ["generate", "--classes", "1", "2", "--steps", "2", "--guidance", "1e38"],
    ["evaluate", "--samples-per-class", "2", "--steps", "2", "--guidance", "1e38"],
])
def test_nan_images_from_the_cli_are_one_line_exit_2(argv, tmp_path, capsys):
    from cachepilot.cli import main

    out = ["--out", str(tmp_path / "g.png")] if argv[0] == "generate" else ["--json", str(tmp_path / "e.json")]
    assert main(argv + out) == 2
    err = capsys.readouterr().err
    assert "generated images" in err and "non-finite" in err and "Traceback" not in err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "e.json").exists()


def test_sample_images_with_diverging_guidance_is_an_error_not_nan_images(pipe):
    from cachepilot.embedded.digits.sampling import sample_images
    from cachepilot.finite import NonFiniteError

    with pytest.raises(NonFiniteError, match="guidance 1e\\+38"):
        sample_images(pipe, [1], guidance_scale=1e38, num_inference_steps=4)
