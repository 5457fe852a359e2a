import math

import numpy as np
import pytest
import torch

from fed_opc.attacks.images import (
    dataset_mean_psnr,
    flat_image,
    match,
    own_mean_image,
    own_mean_psnr,
    psnr,
    save_grid,
    ssim,
)


def images(n, seed=0, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_an_image_against_itself():
    x = images(3)
    assert torch.isinf(psnr(x, x)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    big = images(2, size=32)
    torch.testing.assert_close(ssim(big, big), torch.ones(2))


def test_psnr_of_a_known_error():
    x = torch.full((2, 3, 8, 8), 0.5)
    # mse 0.01 on a unit range: 10 log10(1 / 0.01) = 20 dB
    torch.testing.assert_close(psnr(x + 0.1, x), torch.full((2,), 20.0), atol=1e-4, rtol=0)
    assert float(ssim(images(1, 1), images(1, 2))) < 0.2  # unrelated noise images


def test_flat_baseline():
    x = images(2)
    mean = (0.4, 0.5, 0.6)
    flat = flat_image(mean, x)
    assert flat.shape == x.shape and flat[0, 2, 3, 4] == pytest.approx(0.6)
    assert torch.isinf(dataset_mean_psnr(flat, mean)).all()
    mse = (flat - x).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(dataset_mean_psnr(x, mean), 10 * torch.log10(1 / mse), atol=1e-4, rtol=0)


def test_own_mean_baseline_by_hand_on_a_2x2_image():
    # channel 0: [0, .5; .5, 1], mean .5, squared errors .25, 0, 0, .25; channel 1: [.2, .2; .2, .6], mean .3, squared
    # errors .01, .01, .01, .09. MSE over both channels = (.5 + .12) / 8 = .0775: PSNR = 10 log10(1 / .0775).
    x = torch.tensor([[[[0.0, 0.5], [0.5, 1.0]], [[0.2, 0.2], [0.2, 0.6]]]])
    flat = own_mean_image(x)
    torch.testing.assert_close(flat[0, :, 1, 0], torch.tensor([0.5, 0.3]))
    torch.testing.assert_close(own_mean_psnr(x), torch.tensor([10 * math.log10(1 / 0.0775)]), atol=1e-4, rtol=0)
    # The dataset-mean colour (.5, .5) leaves channel 1 off by .3, .3, .3, .1: MSE (.5 + .28) / 8 = .0975, weaker.
    torch.testing.assert_close(
        dataset_mean_psnr(x, (0.5, 0.5)), torch.tensor([10 * math.log10(1 / 0.0975)]), atol=1e-4, rtol=0
    )


def test_own_mean_baseline_is_never_below_the_dataset_mean_one():
    x = images(6, seed=3)
    assert bool((own_mean_psnr(x) >= dataset_mean_psnr(x, (0.2, 0.9, 0.5))).all())
    assert torch.isinf(own_mean_psnr(flat_image((0.25, 0.5, 0.75), x))).all()


def test_match_recovers_a_permutation_and_picks_from_a_pool():
    pool = images(5)
    perm = [3, 0, 4]
    rec = (pool[perm] + 0.05 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    assert match(rec, pool).tolist() == perm
    assert match(pool[perm], pool).tolist() == perm  # exact copies (inf PSNR) too
    with pytest.raises(ValueError):
        match(images(3), images(2))


def test_save_grid_puts_originals_above_reconstructions(tmp_path):
    from PIL import Image

    top, bottom = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    path = save_grid(tmp_path / "sub" / "grid.png", top, bottom, scale=2)
    arr = np.asarray(Image.open(path))
    assert arr.shape == ((8 + 2 + 8) * 2, (8 + 2 + 8) * 2, 3)
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[-1, -1].tolist() == [255, 255, 255]
