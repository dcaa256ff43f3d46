"""The architecture step of DARTS: first order, and second order with one unrolled SGD step.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055), section 2.3.  For the second order,

    grad_alpha L_val(w', alpha),  w' = w - eta * (momentum * buf + grad_w L_train(w, alpha) + wd * w)
      ~ grad_alpha L_val(w', alpha)
        - eta * [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)] / (2 eps)

with v = grad_w' L_val(w', alpha), w+- = w +- eps v and eps = radius / ||v|| (radius 0.01).

That central difference is the paper's and the default (`hessian='central'`).  `hessian='forward'`
takes [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w, alpha)] / eps instead, where the second
term comes for free from the backward pass that unrolls w: one pass to the architecture weights
fewer per step, at an O(eps) rather than O(eps^2) error in the Hessian-vector product: on the
test's toy network at the DARTS radius the architecture gradient is then 1% off the exact unrolled
one instead of 0.01% (tests/test_architect.py measures both orders against double backward).

The passes whose results are differenced run in full float32 (`full_fp32`), whatever the global
TF32 / reduced-precision settings: eps * v is ~1e-4 of a weight, below TF32's 10-bit mantissa, so
under TF32 (cuDNN's default for convolutions on Ampere and later GPUs) the difference would be
rounding noise, as it is under bfloat16.

Unlike the reference code, the virtual networks are the supernet itself evaluated on substituted
weight tensors (`utils.substituted`): nothing is rebuilt or copied per step,
only weights (not the architecture parameters) are unrolled and perturbed, and the supernet's
BatchNorm running statistics are not touched by the virtual passes.
"""
import contextlib

import torch
import torch.distributed as dist

from utils import UserError, substituted

HESSIAN_STENCILS = ('central', 'forward')
# Where torch keeps the precision of float32 convolutions, matmuls and RNNs, per backend (the
# fp32_precision API of torch 2.9 and later; before it, only the legacy settings exist).
FP32_PRECISION = {name: where for name, where in (
    ('cuda.matmul', torch.backends.cuda.matmul), ('cudnn.conv', getattr(torch.backends.cudnn, 'conv', None)),
    ('cudnn.rnn', getattr(torch.backends.cudnn, 'rnn', None)),
    ('mkldnn.matmul', getattr(torch.backends.mkldnn, 'matmul', None)),
    ('mkldnn.conv', getattr(torch.backends.mkldnn, 'conv', None)),
    ('mkldnn.rnn', getattr(torch.backends.mkldnn, 'rnn', None))) if hasattr(where, 'fp32_precision')}


def _legacy_setting(getter):
    # torch's legacy getters raise when the legacy and the fp32_precision API were mixed.
    try:
        return getter()
    except RuntimeError:
        return None


def fp32_precision_settings():
    """Every global setting that lets float32 convolutions and matmuls run in reduced precision
    (TF32 on CUDA, bfloat16 or TF32 in oneDNN on CPUs), as torch's getters read them; a legacy
    setting that cannot be read (legacy and fp32_precision API mixed) is None."""
    settings = {name: where.fp32_precision for name, where in FP32_PRECISION.items()}
    settings['float32_matmul_precision'] = _legacy_setting(torch.get_float32_matmul_precision)
    settings['cudnn.allow_tf32'] = _legacy_setting(lambda: torch.backends.cudnn.allow_tf32)
    return settings


@contextlib.contextmanager
def full_fp32():
    """Run float32 convolutions and matmuls in IEEE float32 (no TF32, no bfloat16) inside, and
    restore the previous settings on exit, also after an exception; nests.

    Both of torch's APIs are set, consistently, since its legacy getters raise on a mix: the
    legacy one (set_float32_matmul_precision, cudnn.allow_tf32; left alone where it already reads
    as mixed) and the per-operator fp32_precision one, which the kernels follow."""
    before = fp32_precision_settings()
    try:
        if before['float32_matmul_precision'] is not None:
            torch.set_float32_matmul_precision('highest')
        if before['cudnn.allow_tf32'] is not None:
            torch.backends.cudnn.allow_tf32 = False
        for where in FP32_PRECISION.values():
            where.fp32_precision = 'ieee'
        yield
    finally:
        if before['float32_matmul_precision'] is not None:
            torch.set_float32_matmul_precision(before['float32_matmul_precision'])
        if before['cudnn.allow_tf32'] is not None:
            torch.backends.cudnn.allow_tf32 = before['cudnn.allow_tf32']
        for name, where in FP32_PRECISION.items():
            # 'none' inherits from torch.backends.fp32_precision again, where that gave the value.
            for value in ('none', before[name]):
                if where.fp32_precision != before[name]:
                    where.fp32_precision = value


class Architect:
    """The architecture step.  `regularizer()`, if given, is a differentiable term of the
    architecture weights alone (no data, no network weights; e.g. latency.Objective's expected
    latency) added to the architecture loss: its gradient is added to the validation loss's, in
    both orders (in the second it does not depend on the unrolled weights)."""

    def __init__(self, model, criterion, arch_learning_rate=3e-4, arch_weight_decay=1e-3,
                 unrolled=False, arch_grad_clip=None, hessian_radius=0.01, hessian='central', regularizer=None):
        if hessian not in HESSIAN_STENCILS:
            raise UserError(f"unknown Hessian stencil '{hessian}'; choose one of {', '.join(HESSIAN_STENCILS)}")
        self.hessian = hessian
        self.model = model
        self.criterion = criterion
        self.unrolled = unrolled
        self.arch_grad_clip = arch_grad_clip
        self.hessian_radius = hessian_radius
        self.regularizer = regularizer
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=arch_learning_rate,
                                          betas=(0.5, 0.999), weight_decay=arch_weight_decay)

    def step(self, x_train, y_train, x_valid, y_valid, eta, weight_optimizer, check=None):
        """One Adam step of the architecture parameters; returns the validation loss.  `check(loss)`
        may veto the step (a non-finite loss must not reach Adam's moments); then returns None."""
        alphas = self.model.arch_parameters()
        if self.unrolled:
            grads, loss = self.unrolled_gradients(x_train, y_train, x_valid, y_valid, eta, weight_optimizer)
        else:
            with self.weights_frozen():
                loss = self.criterion(self.model(x_valid), y_valid)
                grads = self._gradients(loss, alphas)
        if check is not None and not check(loss):
            return None
        if self.regularizer is not None:
            grads = [g + r.to(g.dtype) for g, r in zip(grads, self._gradients(self.regularizer(), alphas))]
        if dist.is_available() and dist.is_initialized():
            # Every rank must hold the same architecture, so average like DDP does for weights.
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            grads = torch.split(flat, [g.numel() for g in grads])
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad.reshape(alpha.shape).clone()
        if self.arch_grad_clip:
            torch.nn.utils.clip_grad_norm_(alphas, self.arch_grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @staticmethod
    def _gradients(loss, inputs):
        # A network too shallow to have a normal cell leaves alphas_normal unused: zero gradient.
        return torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)

    @contextlib.contextmanager
    def weights_frozen(self):
        """The weights out of the graph while it is recorded, so that a pass to the architecture
        weights computes no weight gradients (hand-written backward passes cannot tell that
        `autograd.grad` did not ask for them)."""
        weights = [p for p in self.model.weight_parameters() if p.requires_grad]
        for p in weights:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in weights:
                p.requires_grad_(True)

    def _virtual_gradients(self, weights, buffers, x, y, inputs):
        """(the loss on (x, y) of the supernet with `weights` and `buffers` substituted, its gradients
        to `inputs`)."""
        with substituted(self.model, {**weights, **buffers}):
            loss = self.criterion(self.model(x), y)
            return loss, self._gradients(loss, inputs)

    def virtual_weights(self, x_train, y_train, eta, weight_optimizer, alpha_grad=False):
        """(w' after one SGD step with the momentum and weight decay of `weight_optimizer`, detached;
        grad_alpha L_train(w, alpha) from the same backward pass if `alpha_grad`, else None)."""
        named = self.model.named_weight_parameters()
        params = [p for _, p in named]
        alphas = self.model.arch_parameters() if alpha_grad else []
        loss = self.criterion(self.model(x_train), y_train)
        grads = self._gradients(loss, params + alphas)
        grads, d_alpha = grads[:len(params)], grads[len(params):]
        group = weight_optimizer.param_groups[0]
        momentum, weight_decay = group.get('momentum', 0.0), group.get('weight_decay', 0.0)
        # Thousands of small tensors: one foreach kernel per operation, not a Python loop of them.
        with torch.no_grad():
            steps = torch._foreach_add(grads, params, alpha=weight_decay)
            buffers = [weight_optimizer.state.get(w, {}).get('momentum_buffer') for w in params]
            with_buffer = [i for i, buf in enumerate(buffers) if buf is not None]
            if with_buffer:
                torch._foreach_add_([steps[i] for i in with_buffer], [buffers[i] for i in with_buffer],
                                    alpha=momentum)
            unrolled = torch._foreach_add(params, steps, alpha=-eta)
        return {name: w for (name, _), w in zip(named, unrolled)}, (d_alpha if alpha_grad else None)

    def unrolled_gradients(self, x_train, y_train, x_valid, y_valid, eta, weight_optimizer):
        alphas = self.model.arch_parameters()
        named = self.model.named_weight_parameters()
        # Virtual passes get their own copy of the BN statistics so the real ones stay untouched.
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        device = x_train.device.type
        central = self.hessian == 'central'
        # The perturbation is ~1e-4 of a weight: under bfloat16/float16 autocast it would vanish in
        # the cast of the weights, under TF32 in the products' rounding, so the passes that difference
        # the gradients always run in full float32 (with the forward stencil that includes the
        # unrolling pass, which gives grad L_train(w)).
        with (torch.autocast(device, enabled=torch.is_autocast_enabled(device) and central),
              contextlib.nullcontext() if central else full_fp32()):
            w_prime, at_w = self.virtual_weights(x_train, y_train, eta, weight_optimizer, alpha_grad=not central)
        w_prime = {n: w.requires_grad_() for n, w in w_prime.items()}
        loss, grads = self._virtual_gradients(w_prime, buffers, x_valid, y_valid, alphas + list(w_prime.values()))
        d_alpha, v = grads[:len(alphas)], grads[len(alphas):]

        eps = self.hessian_radius / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
        names, weights = zip(*named)
        differenced = []
        for sign in ((1.0, -1.0) if central else (1.0,)):
            with torch.no_grad():
                shifted = dict(zip(names, torch._foreach_add(weights, torch._foreach_mul(v, sign * eps))))
            with torch.autocast(device, enabled=False), full_fp32():
                # The shifted weights were made without a graph: this pass computes no weight gradients.
                differenced.append(self._virtual_gradients(shifted, buffers, x_train, y_train, alphas)[1])
        if central:
            grads = [da - eta * (hp - hm) / (2 * eps) for da, hp, hm in zip(d_alpha, *differenced)]
        else:
            grads = [da - eta * (hp - h) / eps for da, hp, h in zip(d_alpha, differenced[0], at_w)]
        return grads, loss
