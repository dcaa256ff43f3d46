"""The DARTS supernet with searchable attention (Att-DARTS).

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055); Nakai, Matsubara and Uehara, "Att-DARTS: Differentiable
Neural Architecture Search for Attention", IJCNN 2020.

Every edge of a cell is a softmax-weighted mixture of candidates.  `--location` decides where
attention is searched (SPEC 3.3):

    after_every          ops (alpha), then attentions incl. Identity (beta) on every edge
    end                  ops (alpha); attention mixture (gamma) on the concatenated cell output
    after_every_and_end  both of the above
    mixed_with_operation ops and attentions compete in one softmax (alpha)
    double_mixed         two stacked mixtures of ops and attentions (alpha, beta)
    no_attention         plain DARTS

The architecture weights are registered parameters (`arch.*`) shared by all normal (resp. all
reduction) cells; they are in `state_dict` and are kept out of `weight_parameters()`.
"""
from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes import ATT_PRIMITIVES, ATTENTION_PRIMITIVES, PRIMITIVE_SETS, AttGenotype, Genotype
from model import ResNetBody
from operations import FactorizedReduce, ReLUConvBN, hand_written_backward, make_candidate
from utils import UserError, global_average_pool, memory_layout, running_variance

# Which candidate lists fill the first layer, second layer and cell-output bottleneck.
Layout = namedtuple('Layout', 'first second bottleneck')
LOCATIONS = {
    'after_every': Layout('ops', 'attentions', None),
    'end': Layout('ops', None, 'attentions'),
    'after_every_and_end': Layout('ops', 'attentions', 'attentions'),
    'mixed_with_operation': Layout('ops+attentions', None, None),
    'double_mixed': Layout('ops+attentions', 'ops+attentions', None),
    'no_attention': Layout('ops', None, None),
}
# Arch-parameter prefix per layer, as named in the logs and the checkpoint.
TABLE_PREFIX = {'first': 'alphas', 'second': 'betas', 'bottleneck': 'gammas'}


def candidate_lists(location, primitives):
    """The candidate names of each layer for a `--location`, or None where it has no layer."""
    if location not in LOCATIONS:
        raise UserError(f"unknown --location '{location}'; choose from {', '.join(LOCATIONS)}")
    ops = list(primitives)
    choices = {'ops': ops, 'attentions': list(ATTENTION_PRIMITIVES),
               # Identity would duplicate skip_connect when mixed with ops.
               'ops+attentions': ops + [a for a in ATTENTION_PRIMITIVES if a != 'Identity']}
    return {layer: (choices[kind] if kind else None) for layer, kind in LOCATIONS[location]._asdict().items()}


def resolve_primitives(primitives):
    if isinstance(primitives, str):
        if primitives not in PRIMITIVE_SETS:
            raise UserError(f"unknown --primitives '{primitives}'; choose from {', '.join(PRIMITIVE_SETS)}")
        return list(PRIMITIVE_SETS[primitives])
    return list(primitives)


def best_candidate(row, names, allow_none):
    """Index of the strongest candidate of a weight row ('none' excluded unless allowed; ties go
    to the first)."""
    scores = [(float(row[k]), -k) for k, name in enumerate(names) if allow_none or name != 'none']
    return -max(scores)[1]


def strongest_edges(alphas, names, steps, allow_none=False):
    """The DARTS derivation: for each node, its two input edges whose best candidate is strongest.
    `alphas` has one row per edge (node 0's 2 inputs, node 1's 3, ...); returns (row, input, best
    candidate index) per kept edge, two per node, strongest first."""
    kept, start = [], 0
    for i in range(steps):
        rows = alphas[start:start + 2 + i]
        best = [best_candidate(rows[j], names, allow_none) for j in range(2 + i)]
        chosen = sorted(range(2 + i), key=lambda j: -float(rows[j][best[j]]))[:2]
        kept += [(start + j, j, best[j]) for j in chosen]
        start += 2 + i
    return kept


def leaf_modules(module):
    """The steps a module applies in order: those of its `stages()` where it has them, of the
    children of an nn.Sequential, else [module]."""
    if hasattr(module, 'stages'):
        parts = module.stages()
    elif isinstance(module, nn.Sequential):
        parts = list(module)
    else:
        return [module]
    return [leaf for part in parts for leaf in leaf_modules(part)]


class NormalizedMixture(torch.autograd.Function):
    """sum_k w_k * BN_k(z_k) with training-mode BatchNorms, keeping only the z_k for backward.

    In the DARTS mixture every conv and pool candidate ends in a BatchNorm, and autograd would
    keep both its input z_k and its output (for d/dw_k).  The output is a cheap function of z_k and
    the batch statistics, so here the gradient of w_k is recovered from z_k:
    sum(g * BN(z)) = sum_c gamma_c * dot_c + beta_c * sum(g)_c with dot_c = sum(g * (z - mean) * invstd)_c,
    which is the BatchNorm backward's own weight gradient.  w_k is folded into the BatchNorm's scale
    and shift, so each candidate costs one normalisation pass and one backward kernel.  Running
    statistics are updated as BatchNorm2d updates them.  First derivatives only (the second-order
    architect uses finite differences).
    """

    @staticmethod
    def _scale(weight, gamma, channels):
        return weight * gamma if gamma is not None else weight.expand(channels).contiguous()

    @staticmethod
    def forward(ctx, weights, eps, momentum, *flat):
        out, saved = None, []
        for k in range(len(flat) // 5):
            z, gamma, beta, running_mean, running_var = flat[5 * k:5 * k + 5]
            scale = NormalizedMixture._scale(weights[k], gamma, z.shape[1])
            shift = weights[k] * beta if beta is not None else None
            y, mean, invstd = torch.native_batch_norm(z, scale, shift, running_mean, running_var, True, momentum, eps)
            out = y if out is None else out.add_(y)
            saved += [z, gamma, beta, running_mean, running_var, mean, invstd]
        ctx.eps, ctx.count = eps, len(flat) // 5
        ctx.save_for_backward(weights, *saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        weights, *saved = ctx.saved_tensors
        grad_weights = torch.zeros_like(weights)
        flat = []
        for k in range(ctx.count):
            z, gamma, beta, running_mean, running_var, mean, invstd = saved[7 * k:7 * k + 7]
            w = weights[k]
            grad_z, dot, grad_sum = torch.ops.aten.native_batch_norm_backward(
                grad.to(z.dtype), z, NormalizedMixture._scale(w, gamma, z.shape[1]), running_mean, running_var,
                mean, invstd, True, ctx.eps, [True, True, gamma is not None])
            if gamma is None:
                grad_weights[k] = dot.sum()
                flat += [grad_z, None, None, None, None]
            else:
                grad_weights[k] = (gamma * dot).sum() + (beta * grad_sum).sum()
                flat += [grad_z, w * dot, w * grad_sum, None, None]
        return (grad_weights, None, None, *flat)


class BatchNormKeepingOutput(torch.autograd.Function):
    """Training-mode non-affine BatchNorm that keeps its output y instead of its input for backward:
    grad_z = invstd * (g - mean_c(g) - y * mean_c(g * y)).  A shared pool's y is kept anyway, for
    the gradients of the mixture weights, so the pool output z need not be.  Returns (y, batch mean,
    batch invstd), the last two without gradient; first derivatives only."""

    @staticmethod
    def forward(ctx, z, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.native_batch_norm(z, None, None, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(y, invstd)
        ctx.mark_non_differentiable(mean, invstd)
        return y, mean, invstd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _mean, _invstd):
        y, invstd = ctx.saved_tensors
        # BatchNorm's own backward kernel, told that y is its input with mean 0 and invstd 1 and
        # that invstd is the scale, computes exactly the formula above.
        grad_z, _, _ = torch.ops.aten.native_batch_norm_backward(
            grad.to(y.dtype), y, invstd, None, None, torch.zeros_like(invstd), torch.ones_like(invstd), True, 0.0,
            [True, False, False])
        return grad_z, None, None, None, None


class SharedInput:
    """What the edges reading one tensor x would each compute alike, computed once: ReLU(x), and
    the weight-free pools with their optional non-affine BatchNorm.  A training-mode BatchNorm
    normalises with the batch's own statistics, so equal inputs give equal outputs; each edge's
    BatchNorm still gets its running statistics updated, from the shared batch statistics."""

    def __init__(self, x):
        self.x = x
        self._relu = None
        self._pooled = {}

    def relu(self):
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    @staticmethod
    def _signature(body, bn):
        """What fixes the pooled output, or None if `body` is not one pooling layer."""
        if len(body) != 1 or not isinstance(body[0], (nn.AvgPool2d, nn.MaxPool2d)):
            return None
        pool = body[0]
        if isinstance(pool, nn.MaxPool2d) and (pool.dilation not in (1, (1, 1)) or pool.return_indices):
            return None
        if bn is not None and (bn.affine or not bn.track_running_stats or bn.momentum is None):
            return None
        geometry = tuple(getattr(pool, name, None) for name in
                         ('kernel_size', 'stride', 'padding', 'ceil_mode', 'count_include_pad', 'divisor_override'))
        return type(pool), geometry, None if bn is None else (bn.eps, bn.momentum)

    def pooled(self, body, bn):
        """BN(pool(x)) for the candidate [pool, bn] (bn may be None), or None if it is no pool."""
        signature = self._signature(body, bn)
        if signature is None:
            return None
        if signature not in self._pooled:
            z = body[0](self.x)
            if bn is None:
                self._pooled[signature] = z, None
            else:
                y, mean, invstd = BatchNormKeepingOutput.apply(z, bn.running_mean, bn.running_var, bn.momentum,
                                                               bn.eps)
                bn.num_batches_tracked.add_(1)
                self._pooled[signature] = y, (bn, mean, running_variance(z, invstd, bn.eps))
            return self._pooled[signature][0]
        y, statistics = self._pooled[signature]
        if statistics is not None and statistics[0] is not bn:
            _, mean, variance = statistics
            with torch.no_grad():
                bn.running_mean.lerp_(mean, bn.momentum)
                bn.running_var.lerp_(variance, bn.momentum)
            bn.num_batches_tracked.add_(1)
        return y


class MixedEdge(nn.Module):
    """sum_k w_k * candidate_k(x).  `none` is never built: its term is zero.  `pool_bn` wraps the
    weight-free pools in a non-affine BN (DARTS; ANAS's unit does not).

    While training, the candidates opening with a ReLU share one ReLU(x), the pools are computed
    once per input (`SharedInput`: a cell state feeds up to four edges), and the convs closing with
    a BatchNorm are summed by NormalizedMixture: per edge that is 3 and 6 fewer feature maps kept for
    backward in the DARTS space (a pool keeps its normalised output, not its input), fewer again when
    a state's edges share the pools.  Attentions that scale channels only (Identity, SE, GE: x times an
    (N, C, 1, 1) `channel_scale`) are mixed as x * sum_k w_k gate_k: one product at full resolution
    instead of two per attention, and none of their outputs kept.  Attentions with a `weighted(x, w)`
    (BAM, CBAM, A2) apply their own mixture weight so that the gradient of w needs no saved output.
    Same result, other rounding."""

    def __init__(self, names, C, stride, height, width, affine, pool_bn=True):
        super().__init__()
        self.active = [k for k, name in enumerate(names) if name != 'none']
        self.candidates = nn.ModuleList(
            make_candidate(names[k], C, stride, height, width, affine, search=pool_bn) for k in self.active)

    def fused(self):
        return self.training and hand_written_backward()

    @staticmethod
    def _plan(op):
        """(opens with ReLU, modules between that ReLU and a final BatchNorm2d, that BatchNorm2d)."""
        leaves = leaf_modules(op)
        relu = isinstance(leaves[0], nn.ReLU)
        final = leaves[-1] if isinstance(leaves[-1], nn.BatchNorm2d) and len(leaves) > 1 else None
        return relu, leaves[int(relu):len(leaves) - (final is not None)], final

    def forward(self, x, weights, shared=None):
        """`shared`: the SharedInput of x if the caller has one (x feeds several edges)."""
        if not self.fused():
            return sum(weights[k] * op(x) for k, op in zip(self.active, self.candidates))
        shared = SharedInput(x) if shared is None else shared
        out, normalized, gates = None, [], None
        for k, op in zip(self.active, self.candidates):
            if hasattr(op, 'channel_scale'):
                gate = weights[k] * op.channel_scale(x)
                gates = gate if gates is None else gates + gate
                continue
            if hasattr(op, 'weighted'):
                term = op.weighted(x, weights[k])
                out = term if out is None else out + term
                continue
            # Planned on every call: modules may have been swapped since construction.
            opens_with_relu, body, final_bn = self._plan(op)
            pooled = shared.pooled(body, final_bn) if not opens_with_relu else None
            if pooled is not None:
                out = weights[k] * pooled if out is None else torch.addcmul(out, pooled, weights[k])
                continue
            h = shared.relu() if opens_with_relu else x
            for module in body:
                h = module(h)
            if final_bn is not None and final_bn.track_running_stats:
                normalized.append((k, h, final_bn))
                continue
            if final_bn is not None:
                h = final_bn(h)
            out = weights[k] * h if out is None else out + weights[k] * h
        if normalized:
            mixture = self._normalized_mixture(weights, normalized)
            out = mixture if out is None else out + mixture
        if gates is not None:
            out = x * gates if out is None else torch.addcmul(out, x, gates)
        return out

    @staticmethod
    def node_sum(edges, xs, weights):
        """sum_e edges[e](xs[e], weights[e]): a node's input edges.  Where every candidate is an
        attention with an edge-batched form (the attention layer of `after_every`), the k edges
        run together on their maps stacked along the batch, each candidate once for all k, with
        each edge's own parameters (stacked per call) and running statistics: at search sizes most
        of an attention's cost is per call, not per pixel (on the CPU a mixture of the six costs
        13-16 ms per edge at batch 2 and 16-42 ms at batch 16; a batch-16 first-order step went
        from 10.11 to 9.22 s, both paths alternating in one process).  Same result, other rounding."""
        if not MixedEdge._edge_batchable(edges, xs):
            return sum(edge(x, w) for edge, x, w in zip(edges, xs, weights))
        k, n, first = len(xs), xs[0].shape[0], edges[0]
        x = torch.cat(xs)
        out = gates = None
        for j, index in enumerate(first.active):
            modules = [edge.candidates[j] for edge in edges]
            kind = type(modules[0])
            if hasattr(kind, 'edge_channel_scales'):
                scale = kind.edge_channel_scales(modules, x, k)
                gate = weights[:, index, None, None] if scale is None else scale * weights[:, index, None, None]
                gates = gate if gates is None else gates + gate
            else:
                term = kind.edge_weighted(modules, x, k, weights[:, index])
                out = term if out is None else out + term
        if gates is not None:
            gates = gates.expand(k, n, x.shape[1]).reshape(k * n, x.shape[1], 1, 1)
            out = x * gates if out is None else torch.addcmul(out, x, gates)
        # Summed over the positions-by-channels view, so that the node stays channels-last.
        return out.permute(0, 2, 3, 1).reshape(k, n, *out.shape[2:], out.shape[1]).sum(0).permute(0, 3, 1, 2)

    @staticmethod
    def _edge_batchable(edges, xs):
        first, x = edges[0], xs[0]
        if (len(edges) < 2 or not first.fused() or x.dim() != 4 or x.shape[0] < 2
                or torch.is_autocast_enabled(x.device.type)):
            return False
        if any(t.shape != x.shape or memory_layout(t) != torch.channels_last for t in xs):
            return False
        kinds = [type(c) for c in first.candidates]
        if not all(hasattr(kind, 'edge_batchable') for kind in kinds) or any(
                [type(c) for c in edge.candidates] != kinds or edge.active != first.active for edge in edges):
            return False
        return all(kind.edge_batchable([edge.candidates[j] for edge in edges], x) for j, kind in enumerate(kinds))

    @staticmethod
    def _normalized_mixture(weights, normalized):
        rows, flat = [], []
        eps, momentum = normalized[0][2].eps, normalized[0][2].momentum
        for k, z, bn in normalized:
            if (bn.eps, bn.momentum) != (eps, momentum) or bn.momentum is None:
                raise ValueError('a mixed edge needs the same eps and momentum on all its BatchNorms')
            bn.num_batches_tracked.add_(1)
            rows.append(k)
            flat += [z, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return NormalizedMixture.apply(weights[rows], eps, momentum, *flat)


class SearchCell(nn.Module):
    def __init__(self, lists, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 height, width, affine):
        super().__init__()
        self.steps, self.multiplier = steps, multiplier
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine)
        self.first = nn.ModuleList()
        self.second = nn.ModuleList() if lists['second'] else None
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.first.append(MixedEdge(lists['first'], C, stride, height, width, affine))
                if self.second is not None:
                    self.second.append(MixedEdge(lists['second'], C, 1, height, width, affine))
        self.bottleneck = (MixedEdge(lists['bottleneck'], C * multiplier, 1, height, width, affine)
                           if lists['bottleneck'] else None)

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        edge = 0
        shared = [SharedInput(h) for h in states]
        for _ in range(self.steps):
            start = edge
            outs = []
            for h, common in zip(states, shared):
                outs.append(self.first[edge](h, weights['first'][edge], common))
                edge += 1
            if self.second is not None:
                node = MixedEdge.node_sum(self.second[start:edge], outs, weights['second'][start:edge])
            else:
                node = sum(outs)
            states.append(node)
            shared.append(SharedInput(node))
        out = torch.cat(states[-self.multiplier:], dim=1)
        if self.bottleneck is not None:
            out = self.bottleneck(out, weights['bottleneck'])
        return out


class SearchNetwork(nn.Module):
    """The supernet: a stem, `layers` search cells (reduction at 1/3 and 2/3 depth), a classifier."""

    def __init__(self, C=16, num_classes=10, layers=8, location='after_every', primitives='darts',
                 steps=4, multiplier=None, stem_multiplier=3, in_channels=3, image_size=32, affine=False):
        super().__init__()
        self.config = dict(C=C, num_classes=num_classes, layers=layers, location=location,
                           primitives=resolve_primitives(primitives), steps=steps,
                           multiplier=multiplier or steps, stem_multiplier=stem_multiplier,
                           in_channels=in_channels, image_size=image_size, affine=affine)
        self.steps, self.multiplier = steps, multiplier or steps
        self.lists = candidate_lists(location, self.config['primitives'])

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr, affine=affine))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        size = image_size
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
                size = (size + 1) // 2
            cell = SearchCell(self.lists, steps, self.multiplier, C_prev_prev, C_prev, C_curr,
                              reduction, reduction_prev, size, size, affine)
            cell.reduction = reduction
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, self.multiplier * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)

        num_edges = sum(2 + i for i in range(steps))
        self.arch = nn.ParameterDict()
        for layer, names in self.lists.items():
            if names is None:
                continue
            shape = (num_edges, len(names)) if layer != 'bottleneck' else (len(names),)
            for cell_type in ('normal', 'reduce'):
                self.arch[f'{TABLE_PREFIX[layer]}_{cell_type}'] = nn.Parameter(1e-3 * torch.randn(*shape))

    def new(self):
        """A fresh supernet with the same configuration and a copy of the architecture weights."""
        clone = type(self)(**self.config)
        clone.arch.load_state_dict(self.arch.state_dict())
        return clone

    def arch_parameters(self):
        return list(self.arch.values())

    def named_weight_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if not n.startswith('arch.')]

    def weight_parameters(self):
        return [p for _, p in self.named_weight_parameters()]

    def softmaxed(self):
        """{table name: softmax over candidates}, e.g. alphas_normal of shape (edges, candidates)."""
        return {name: F.softmax(p, dim=-1) for name, p in self.arch.items()}

    def forward(self, x):
        tables = self.softmaxed()
        weights = {cell_type: {layer: tables.get(f'{TABLE_PREFIX[layer]}_{cell_type}')
                               for layer in TABLE_PREFIX}
                   for cell_type in ('normal', 'reduce')}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights['reduce' if cell.reduction else 'normal'])
        return self.classifier(global_average_pool(s1))

    def edges(self):
        """(node, input) of every edge, in the row order of the weight tables."""
        return [(i, j) for i in range(self.steps) for j in range(2 + i)]

    def genotype(self, sparse=False):
        """Derive the discrete cell (SPEC 3.3): per node keep the two strongest input edges, ranked
        by their best first-layer weight; on each, the best op and the best attention.  'none' is
        excluded unless `sparse` (CNAS), where a node may keep a `none` edge."""
        with torch.no_grad():
            tables = {k: v.cpu() for k, v in self.softmaxed().items()}
        cells = {}
        for cell_type in ('normal', 'reduce'):
            cells[cell_type] = self._derive_cell(tables[f'alphas_{cell_type}'],
                                                 tables.get(f'betas_{cell_type}'), sparse)
            gammas = tables.get(f'gammas_{cell_type}')
            cells[cell_type + '_bottleneck'] = (self.lists['bottleneck'][int(gammas.argmax())]
                                                if gammas is not None else '')
        concat = list(range(2, 2 + self.steps))
        return Genotype(normal=cells['normal'], normal_concat=concat, reduce=cells['reduce'],
                        reduce_concat=concat, normal_bottleneck=cells['normal_bottleneck'],
                        reduce_bottleneck=cells['reduce_bottleneck'])

    def _derive_cell(self, alphas, betas, sparse):
        first, second = self.lists['first'], self.lists['second']
        entries = []
        for row, j, k in strongest_edges(alphas, first, self.steps, sparse):
            attn = second[best_candidate(betas[row], second, False)] if betas is not None else ''
            entries.append((first[k], j, attn))
        return entries

    def weight_tables(self):
        """The softmaxed tables with their candidate names, as logged to alphas.jsonl."""
        with torch.no_grad():
            tables = self.softmaxed()
        out = {}
        for name, values in tables.items():
            layer = next(layer for layer, prefix in TABLE_PREFIX.items() if name.startswith(prefix))
            rows = values.reshape(-1, values.shape[-1]).cpu().tolist()
            out[name] = {'candidates': self.lists[layer], 'values': rows}
        return out


# --------------------------------------------------------------------------------------------------
# ANAS (Dang, "Exploring Attention Convolutional Neural Network via Neural Architecture Search",
# 2019; reference `anas/model_search.py`, `anas/res_att_search_cifar.py`, SPEC 2.3): a CIFAR ResNet
# whose blocks all hold a mixed attention unit; one architecture table is shared by all units.
# The reference's skip-connect dropout (`id_reg`) was never switched on (SPEC 7.4) and is left out.
# --------------------------------------------------------------------------------------------------

class MixedAttentionUnit(nn.Module):
    """The searchable unit: both inputs are x; `steps` nodes over 2 + 3 + ... mixed edges of
    ATT_PRIMITIVES (non-affine, pools without BN); output x * sigmoid(sum of the nodes)."""

    def __init__(self, C, steps=3):
        super().__init__()
        self.steps = steps
        self.edges = nn.ModuleList(MixedEdge(ATT_PRIMITIVES, C, 1, None, None, affine=False, pool_bn=False)
                                   for i in range(steps) for _ in range(2 + i))

    def forward(self, x, weights):
        states, edge = [x, x], 0
        # Both inputs are x: its pools and ReLU are shared by the edges of both.
        shared = [SharedInput(x)] * 2
        for _ in range(self.steps):
            node = 0
            for h, common in zip(states, shared):
                node = node + self.edges[edge](h, weights[edge], common)
                edge += 1
            states.append(node)
            shared.append(SharedInput(node))
        return x * torch.sigmoid(sum(states[2:]))


class AttentionSearchResNet(ResNetBody):
    """ResNet (`net_type`, ResNet-20 in the paper) with a MixedAttentionUnit after bn2 of every
    block.  `alphas` (edges x 9, init 1e-3 * randn) is the one architecture table, softmaxed once
    per forward and handed to every unit, so its gradient sums the contributions of all blocks."""

    def __init__(self, net_type='resnet20', num_classes=10, steps=3, in_channels=3):
        super().__init__(net_type, num_classes, lambda C: MixedAttentionUnit(C, steps), in_channels)
        self.steps = steps
        self.alphas = nn.Parameter(1e-3 * torch.randn(len(self.edges()), len(ATT_PRIMITIVES)))

    def arch_parameters(self):
        return [self.alphas]

    def named_weight_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if n != 'alphas']

    def weight_parameters(self):
        return [p for _, p in self.named_weight_parameters()]

    def forward(self, x):
        return self._logits(x, (F.softmax(self.alphas, dim=-1),))

    def edges(self):
        """(node, input) of every edge, in the row order of `alphas`."""
        return [(i, j) for i in range(self.steps) for j in range(2 + i)]

    def genotype(self):
        """As DARTS: per node the two strongest inputs, each with its best op other than 'none'."""
        with torch.no_grad():
            weights = F.softmax(self.alphas, dim=-1).cpu()
        return AttGenotype(att=[(ATT_PRIMITIVES[k], j)
                                for _, j, k in strongest_edges(weights, ATT_PRIMITIVES, self.steps)])

    def weight_tables(self):
        """The softmaxed table with its candidate names, as logged to alphas.jsonl."""
        with torch.no_grad():
            values = F.softmax(self.alphas, dim=-1).cpu().tolist()
        return {'alphas_att': {'candidates': list(ATT_PRIMITIVES), 'values': values}}
