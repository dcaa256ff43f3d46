"""Zero-cost proxies: scores of an untrained network that rank architectures without training them.

    score(network, 'synflow', (images, labels))      # a float; higher is better for every proxy

- synflow: Tanaka, Kunin, Yamins and Ganguli, "Pruning neural networks without any data by
  iteratively conserving synaptic flow", NeurIPS 2020 (ganguli-lab/Synaptic-Flow), as a NAS score
  in Abdelfattah et al. (below): all parameters made absolute, BatchNorm bypassed, one all-ones
  image in float64; the score sums |theta * dR/dtheta| over the weights, R the sum of the logits.
- naswot: Mellor, Turner, Storkey and Crowley, "Neural Architecture Search without Training",
  ICML 2021 (BayesWatch/nas-without-training `score_networks.py`): log |K| for the batch kernel
  K_ij = sum over ReLUs of the number of units where images i and j are on the same side of zero
  (N_A - Hamming distance of their binary codes).
- grad_norm, snip, grasp, jacob_cov: Abdelfattah, Mehrotra, Dudziak and Lane, "Zero-Cost Proxies
  for Lightweight NAS", ICLR 2021 (SamsungLabs/zero-cost-nas `foresight/pruners/measures`), from one
  batch with cross-entropy: the sum over layers of the gradient's Frobenius norm; SNIP's saliency
  |theta * dL/dtheta| (Lee et al., ICLR 2019); GraSP's -theta * Hg (Wang et al., ICLR 2020); and
  the score of the input Jacobians' correlation matrix of Mellor et al.'s first version
  (arXiv:2006.04647v1): -sum(log(lambda + k) + 1 / (lambda + k)), k = 1e-5.
- flops (one image's forward, `complexity.count_flops`) and params (parameters without the
  auxiliary head), the baselines of both papers.

As in those references, the weights are those of every convolution and linear layer, the
network is in training mode (BatchNorm normalises by the batch's statistics) and only the main
logits of a network with an auxiliary head count.  Every network the project builds from a
genotype (DARTS and Att-DARTS cells, CNAS, NAG, NAS-Bench-201 cells, ANAS ResNets) returns
(logits, auxiliary logits) and is scored as it is.  Scoring works on a copy: the network's
parameters, buffers, gradients and mode are left as they were.  Unlike the references, dropout
and drop path are off (none of their networks had either), so a score depends on the network,
the batch and nothing else.
"""
import copy
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import complexity
import kernels
import utils
from utils import UserError

# name -> function(network, images, labels) -> float, on a copy prepared by `scoring_copy`.
PROXIES = {}
# Proxies that read the batch's images and labels (synflow reads only the image shape).
NEEDS_DATA = set()
JACOB_COV_K = 1e-5  # zero-cost-nas `jacob_cov.eval_score`


def proxy(name, needs_data=True):
    def add(function):
        PROXIES[name] = function
        if needs_data:
            NEEDS_DATA.add(name)
        return function
    return add


def check_names(names, flag='--proxy'):
    unknown = [name for name in names if name not in PROXIES]
    if unknown:
        raise UserError(f"{flag}: unknown proxy {', '.join(unknown)}; choose from {', '.join(PROXIES)}")
    return list(names)


def logits_of(output):
    """The logits of a network's output: the project's networks return (logits, auxiliary logits)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def weights(network):
    """The weights the references score: those of every convolution and linear layer."""
    return [m.weight for m in network.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight is not None]


class _Intercept(TorchFunctionMode):
    """Calls of the torch functions in `handlers` go to `handler(function, args, kwargs)`, whether a
    module (nn.ReLU, nn.BatchNorm2d) or the code itself (torch.relu) calls them."""

    def __init__(self, handlers):
        super().__init__()
        self.handlers = handlers

    def __torch_function__(self, function, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if function in self.handlers:
            return self.handlers[function](function, args, kwargs)
        return function(*args, **kwargs)


_RELUS = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)


def relu_inputs_seen(record):
    """Inside, `record(x)` sees the input of every ReLU the network computes, before it is applied."""
    def observe(function, args, kwargs):
        record(args[0] if args else kwargs['input'])
        return function(*args, **kwargs)
    return _Intercept({function: observe for function in _RELUS})


def batchnorm_bypassed():
    """Inside, every BatchNorm returns its input (zero-cost-nas scores synflow with bn=False)."""
    return _Intercept({F.batch_norm: lambda function, args, kwargs: args[0] if args else kwargs['input']})


def cross_entropy(network, images, labels):
    return F.cross_entropy(logits_of(network(images)), labels)


@proxy('synflow', needs_data=False)
def synflow(network, images, labels):
    network.double()
    with torch.no_grad():
        for tensor in itertools.chain(network.parameters(), network.buffers()):
            if tensor.is_floating_point():
                tensor.abs_()
    ones = torch.ones((1,) + tuple(images.shape[1:]), dtype=torch.float64, device=images.device)
    with batchnorm_bypassed():
        logits_of(network(ones)).sum().backward()
    return sum(float((w.detach() * w.grad).abs().sum()) for w in weights(network) if w.grad is not None)


@proxy('naswot')
def naswot(network, images, labels):
    kernel = torch.zeros(len(images), len(images), dtype=torch.float64, device=images.device)

    def record(pre_activation):
        codes = pre_activation.detach().flatten(1) > 0
        units = codes.shape[1]
        # c c' + (1 - c)(1 - c)' in one product; float32 sums of 0/1 are exact below 2^24 units
        codes = codes.to(torch.float32 if units < 2 ** 24 else torch.float64)
        same_sign = (2 * (codes @ codes.T)).double() + units
        active = codes.sum(1).double()
        kernel.add_(same_sign - active[:, None] - active[None, :])
    with torch.no_grad(), relu_inputs_seen(record):
        network(images)
    return float(torch.linalg.slogdet(kernel).logabsdet)


@proxy('grad_norm')
def grad_norm(network, images, labels):
    cross_entropy(network, images, labels).backward()
    return sum(float(w.grad.double().norm()) for w in weights(network) if w.grad is not None)


@proxy('snip')
def snip(network, images, labels):
    cross_entropy(network, images, labels).backward()
    return sum(float((w.detach().double() * w.grad.double()).abs().sum())
               for w in weights(network) if w.grad is not None)


@proxy('grasp')
def grasp(network, images, labels):
    scored = weights(network)
    gradient = torch.autograd.grad(cross_entropy(network, images, labels), scored, allow_unused=True)
    differentiable = torch.autograd.grad(cross_entropy(network, images, labels), scored, create_graph=True,
                                         allow_unused=True)
    # g . grad(L) differentiated once more: the Hessian-gradient product Hg.
    pairs = [(g.detach() * d).sum() for g, d in zip(gradient, differentiable) if g is not None and d is not None]
    product = sum(pairs) if pairs else torch.zeros(())
    if not product.requires_grad:  # a network linear in its weights: H = 0
        return 0.0
    hessian_gradient = torch.autograd.grad(product, scored, allow_unused=True)
    return sum(float((-w.detach().double() * h.double()).sum()) for w, h in zip(scored, hessian_gradient)
               if h is not None)


@proxy('jacob_cov')
def jacob_cov(network, images, labels):
    images = images.detach().clone().requires_grad_(True)
    logits_of(network(images)).sum().backward()
    jacobians = images.grad.flatten(1).double()
    correlation = torch.corrcoef(jacobians)
    if not torch.isfinite(correlation).all():  # an image whose Jacobian is constant: no correlation
        return float('nan')
    eigenvalues = torch.linalg.eigvalsh(correlation)
    return float(-(torch.log(eigenvalues + JACOB_COV_K) + 1 / (eigenvalues + JACOB_COV_K)).sum())


@proxy('flops', needs_data=False)
def flops(network, images, labels):
    return float(complexity.count_flops(network, tuple(images.shape[1:])))


@proxy('params', needs_data=False)
def params(network, images, labels):
    return float(round(utils.count_parameters_in_MB(network) * 1e6))


def scoring_copy(network):
    """A copy of `network` to score: the plain implementation, training mode, no dropout, no drop
    path, no gradients."""
    scratch = kernels.plain_copy(network) if kernels.is_accelerated(network) else copy.deepcopy(network)
    scratch.train()
    for module in scratch.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
        if hasattr(module, 'drop_path_prob'):
            module.drop_path_prob = 0.
    for parameter in scratch.parameters():
        parameter.grad = None
    return scratch


def score(network, name, batch, seed=0):
    """The proxy `name` of `network` on `batch` (images, labels), computed on a copy of the network
    with the random generators seeded by `seed` (and restored afterwards)."""
    check_names([name], 'proxy')
    device = next(itertools.chain(network.parameters(), network.buffers())).device
    images, labels = (t.to(device) for t in batch)
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        torch.manual_seed(seed)
        return PROXIES[name](scoring_copy(network), images.clone(), labels)


def score_all(network, names, batch, seed=0):
    """{name: score} for the proxies `names`."""
    return {name: score(network, name, batch, seed) for name in names}

