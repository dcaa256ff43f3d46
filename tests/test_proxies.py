"""proxies.py: each zero-cost proxy against a closed form or an explicit recomputation on a network
small enough to write down, and scoring that leaves every network the project builds untouched."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import genotypes
import nb201
import proxies
from anas import ResNetCIFAR
from model import NetworkCIFAR
from nag_networks import NAGNetworkCIFAR
from nb201_model import NB201Network
from registry import ATTENTIONS
from utils import UserError


class Logits(nn.Module):
    """A stack of layers that returns (logits, None), as the project's networks do."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x, None


class FunctionalReLU(nn.Module):
    def forward(self, x):
        return torch.relu(x)


def float64(module, seed=0):
    torch.manual_seed(seed)
    for parameter in module.parameters():  # signs of both kinds, and no zeros
        nn.init.normal_(parameter)
    return module.double()


def softmax_regression(seed=0):
    return float64(Logits(nn.Linear(6, 4, bias=False)), seed)


def batch(n, d, classes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=generator, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=generator))


def test_synflow_of_a_two_layer_linear_network_is_twice_its_absolute_path_sum():
    # R = 1' |W2| |W1| 1 is linear in each layer's weights, so each layer's sum of |theta dR/dtheta| is R.
    # The BatchNorm is bypassed and the ReLU passes the positive signal unchanged.
    net = float64(Logits(nn.Linear(5, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3, bias=False)))
    w1, w2 = net.layers[0].weight.detach(), net.layers[3].weight.detach()
    path_sum = float(torch.ones(3, dtype=torch.float64) @ w2.abs() @ w1.abs() @ torch.ones(5, dtype=torch.float64))
    assert proxies.score(net, 'synflow', batch(2, 5, 3)) == pytest.approx(2 * path_sum, rel=1e-12)


def test_naswot_is_the_log_determinant_of_the_kernel_of_explicit_relu_codes():
    net = float64(Logits(nn.Linear(6, 7), nn.ReLU(inplace=True), nn.Linear(7, 5), FunctionalReLU(), nn.Linear(5, 3)))
    x, y = batch(5, 6, 3)
    first, second, last = net.layers[0], net.layers[2], net.layers[4]
    with torch.no_grad():
        h1 = first(x)
        h2 = second(torch.relu(h1))
    kernel = np.zeros((5, 5))
    for pre_activation in (h1, h2):  # both ReLUs, the module and the function
        codes = (pre_activation > 0).numpy()
        units = codes.shape[1]
        for i in range(5):
            for j in range(5):
                kernel[i, j] += units - np.sum(codes[i] != codes[j])  # N_A - Hamming distance
    assert last.out_features == 3
    assert proxies.score(net, 'naswot', (x, y)) == pytest.approx(np.linalg.slogdet(kernel)[1], rel=1e-12)


def softmax_regression_gradient(w, x, y):
    """dL/dW of the mean cross-entropy of logits x W', and the softmax probabilities."""
    p = torch.softmax(x @ w.T, dim=1)
    onehot = torch.nn.functional.one_hot(y, w.shape[0]).double()
    return (p - onehot).T @ x / len(x), p


def test_grad_norm_and_snip_of_a_softmax_regression_are_its_closed_form_gradient():
    net = softmax_regression()
    x, y = batch(7, 6, 4)
    w = net.layers[0].weight.detach()
    gradient, _ = softmax_regression_gradient(w, x, y)
    assert proxies.score(net, 'grad_norm', (x, y)) == pytest.approx(float(gradient.norm()), rel=1e-12)
    assert proxies.score(net, 'snip', (x, y)) == pytest.approx(float((w * gradient).abs().sum()), rel=1e-12)


def test_grasp_of_a_softmax_regression_is_minus_theta_times_its_closed_form_hessian_gradient():
    # L = mean_n CE(W x_n): H[V] = mean_n (diag(p_n) - p_n p_n') V x_n x_n'.
    net = softmax_regression()
    x, y = batch(7, 6, 4)
    w = net.layers[0].weight.detach()
    gradient, p = softmax_regression_gradient(w, x, y)
    hessian_gradient = sum(torch.outer((torch.diag(p[n]) - torch.outer(p[n], p[n])) @ gradient @ x[n], x[n])
                           for n in range(len(x))) / len(x)
    assert proxies.score(net, 'grasp', (x, y)) == pytest.approx(float(-(w * hessian_gradient).sum()), rel=1e-10)


def test_jacob_cov_scores_the_correlation_of_explicit_input_jacobians():
    net = float64(Logits(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    x, y = batch(5, 6, 3)
    first, last = net.layers[0], net.layers[2]
    with torch.no_grad():
        active = (first(x) > 0).double()
    # d(sum of logits)/dx_n = W1' (active_n * W2' 1)
    jacobians = (active * last.weight.detach().sum(0)) @ first.weight.detach()
    eigenvalues = np.linalg.eigvalsh(np.corrcoef(jacobians.numpy()))
    k = 1e-5
    expected = -np.sum(np.log(eigenvalues + k) + 1 / (eigenvalues + k))
    assert proxies.score(net, 'jacob_cov', (x, y)) == pytest.approx(expected, rel=1e-9)


def test_flops_and_params_are_counted_by_hand():
    net = Logits(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    images = (torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    # a multiply and an add per weight and output position; the bias additions are not counted
    assert proxies.score(net, 'flops', images) == 2 * 3 * 4 * 9 * 8 * 8 + 2 * 256 * 10
    assert proxies.score(net, 'params', images) == 4 * 3 * 9 + 256 * 10 + 10


def test_params_is_the_built_network_without_its_auxiliary_head():
    net = NetworkCIFAR(4, 10, 3, True, genotypes.DARTS_V2, image_size=8)
    head = sum(p.numel() for p in net.auxiliary_head.parameters())
    assert head > 0
    assert proxies.score(net, 'params', (torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))) == \
        sum(p.numel() for p in net.parameters()) - head


def every_attention_genotype():
    """A DARTS cell whose edges and bottlenecks use every registered attention."""
    names = ATTENTIONS.names()
    cell = [(op, j, names[(2 * node + k) % len(names)])
            for node in range(4) for k, (op, j) in enumerate((('sep_conv_3x3', 0), ('dil_conv_3x3', node + 1)))]
    return genotypes.Genotype(normal=cell, normal_concat=[2, 3, 4, 5], reduce=cell, reduce_concat=[2, 3, 4, 5],
                              normal_bottleneck=names[-1], reduce_bottleneck=names[1])


NETWORKS = {
    'att_darts': lambda: NetworkCIFAR(4, 10, 3, True, genotypes.Att_DARTS, image_size=8),
    'every_attention': lambda: NetworkCIFAR(4, 10, 3, False, every_attention_genotype(), image_size=8),
    'cnas': lambda: NetworkCIFAR(4, 10, 3, False, genotypes.DARTS_MORE_NONE_V3, image_size=8, pooled_head=True,
                                 reduce_level=1, shuffle_groups='auto'),
    'anas_resnet': lambda: ResNetCIFAR('resnet20', 10, 'anas', genotypes.ANAS),
    'nb201': lambda: NB201Network(nb201.parse('|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+'
                                              '|skip_connect~0|none~1|nor_conv_3x3~2|'), C=4, cells_per_stage=1,
                                  image_size=8),
    'nag': lambda: NAGNetworkCIFAR(4, 10, 5, True, genotypes.NAMED['NAG'], keep_prob=0.6, image_size=8),
}


@pytest.mark.parametrize('kind', NETWORKS)
def test_scoring_leaves_the_network_bit_identical_and_repeats_exactly(kind):
    torch.manual_seed(0)
    net = NETWORKS[kind]()
    net.eval()
    net.drop_path_prob = 0.2
    data = (torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    state = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    rng = torch.get_rng_state()
    first = proxies.score_all(net, proxies.PROXIES, data, seed=3)
    assert all(math.isfinite(value) for value in first.values()), first
    assert proxies.score_all(net, proxies.PROXIES, data, seed=3) == first
    assert all(torch.equal(tensor, state[name]) for name, tensor in net.state_dict().items())
    assert all(parameter.grad is None for parameter in net.parameters())
    assert not any(module.training for module in net.modules()) and net.drop_path_prob == 0.2
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_unknown_proxy_is_one_line_naming_the_known_ones():
    with pytest.raises(UserError, match='unknown proxy nope; choose from synflow, naswot'):
        proxies.score(softmax_regression(), 'nope', batch(2, 6, 4))
