import pytest
import torch

from fed_opc.models import ARCHS, build_model
from fed_opc.rng import torch_rng


@pytest.mark.parametrize(
    "arch,norm",
    [
        ("small_cnn", "none"),
        ("small_cnn", "batch"),
        ("small_cnn", "group"),
        ("cnn4", "batch"),
        ("fedavg_cnn", "none"),
        ("fedavg_cnn", "group"),
        ("resnet18", None),
    ],
)
def test_shapes_features_and_head(arch, norm):
    m = build_model(arch, 10, 3, generator=torch_rng(0, "init"), norm=norm).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch_rng(0, "x"))
    f = m.features(x)
    assert f.shape == (4, m.feature_dim) and m.head.bias is not None
    assert torch.allclose(m(x), m.head(f), atol=1e-5)
    assert (f >= 0).all()  # after ReLU and average pooling


def test_resnet18_has_cifar_stem():
    m = build_model("resnet18", 10, 3, generator=torch_rng(0, "init"))
    assert m.body.conv1.kernel_size == (3, 3) and m.body.conv1.stride == (1, 1)
    assert isinstance(m.body.maxpool, torch.nn.Identity) and m.feature_dim == 512


def test_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("small_cnn", 10, 3, generator=torch_rng(0, "init")).state_dict()
    torch.manual_seed(123)  # the global RNG must not matter
    b = build_model("small_cnn", 10, 3, generator=torch_rng(0, "init")).state_dict()
    c = build_model("small_cnn", 10, 3, generator=torch_rng(1, "init")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    torch.random.set_rng_state(state)


def test_small_input_and_grayscale():
    m = build_model("small_cnn", 4, 1, generator=torch_rng(0, "init"), width=4)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_unknown_arch():
    with pytest.raises(KeyError, match="valid: " + ", ".join(sorted(ARCHS))):
        build_model("vgg", 10, 3, generator=torch_rng(0, "init"))


def test_fedavg_cnn_is_the_papers_network_on_mnist():
    """McMahan et al. (2017): 5x5 conv 32, pool, 5x5 conv 64, pool, fc 512, softmax: 1,663,370 parameters on MNIST."""
    m = build_model("fedavg_cnn", 10, 1, generator=torch_rng(0, "init"))
    assert sum(p.numel() for p in m.parameters()) == 832 + 51_264 + 1_606_144 + 5_130 == 1_663_370
    x = torch.zeros(3, 1, 28, 28)
    before_pool = m.body[:8](x)  # two conv-norm-ReLU-max-pool blocks
    assert before_pool.shape == (3, 64, 7, 7)
    assert torch.equal(m.body[8](before_pool), before_pool)  # the 7 x 7 pool is the identity on MNIST
    assert m.feature_dim == 512 and m.features(x).shape == (3, 512)


def test_fedavg_cnn_takes_any_image_size_with_the_same_parameters():
    a = build_model("fedavg_cnn", 10, 3, generator=torch_rng(0, "init"), width=8)
    assert a(torch.zeros(2, 3, 32, 32)).shape == a(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert a.feature_dim == 128


def test_cnn4_is_small_cnn_with_a_fourth_stage():
    """32, 64, 128, 256 channels of 3x3 convs with batch norm, pools after the first three: 391,466 parameters."""
    m = build_model("cnn4", 10, 3, generator=torch_rng(0, "init"), norm="batch")
    convs = [(3 * 9 * 32) + 64, (32 * 9 * 64) + 128, (64 * 9 * 128) + 256, (128 * 9 * 256) + 512]
    assert sum(p.numel() for p in m.parameters()) == sum(convs) + 256 * 10 + 10 == 391_466
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.body) == 3 and m.feature_dim == 256
    small = build_model("small_cnn", 10, 3, generator=torch_rng(0, "init"), norm="batch")
    assert [k for k in small.state_dict() if k.startswith("body.")] == [
        k for k in m.state_dict() if k.startswith("body.") and int(k.split(".")[1]) < 11
    ]
