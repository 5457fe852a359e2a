import numpy as np
import pytest
import torch

from fed_opc.attacks.images import baseline_psnr, flat_image, match, psnr, save_grid, ssim


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
    assert torch.isinf(baseline_psnr(flat, mean)).all()
    mse = (flat - x).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(baseline_psnr(x, mean), 10 * torch.log10(1 / mse), atol=1e-4, rtol=0)


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
