"""SLNAS: a lite single-path search space, its weight-sharing supernet and three samplers.

Chen, "Stage and Lite Search Technology in Convolutional Neural Network Architecture Search"
(reference code Yee-Master/SLNAS).  "Lite": ShuffleNet-v2 units with anti-aliased BlurPool
downsampling (Zhang, ICML 2019) and Mish, 1x1-conv pooling ops, SE + 1x1 fusion at every block
output.  "Stage": a two-stage controller, a pointer LSTM for the inputs then a bidirectional LSTM
for the ops, trained with REINFORCE as in ENAS (Pham et al., ICML 2018).  Uniform random sampling
and a genetic algorithm search the same supernet as baselines.

An architecture is a `genotypes.SeqArch`: a 20-int sequence for normal blocks, one for reduction
blocks, and the stage layout `blocks` (normal blocks per stage; a reduction block ends each stage).

`Network(arch=None)` is the supernet (every op of every node, the architecture given per forward);
`Network(arch=...)` holds only that architecture's ops, under the same parameter names, so
`inherit(child, supernet)` is a plain state-dict copy (the reference's `parameters_selection`).
"""
import argparse
import functools
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from attention import SE
from genotypes import SEQ_NODES, SEQ_OPS, SeqArch, validate_blocks
from operations import ChannelShuffle
from utils import UserError, drop_path

NUM_OPS = len(SEQ_OPS)
SE_REDUCTION = 16


# ----------------------------------------------------------------------------- ops

def batch_norm(channels, batch_stats):
    """Search BNs normalise with the batch statistics even in eval mode (a sampled path's running
    statistics would mix every other path's); trained networks keep running statistics."""
    return nn.BatchNorm2d(channels, track_running_stats=not batch_stats)


def conv1x1(nin, nout):
    return nn.Conv2d(nin, nout, 1, bias=False)


def depthwise(channels, kernel_size):
    return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling (antialiased-cnns `Downsample`, filter size 3): a fixed
    binomial [1, 2, 1] x [1, 2, 1] / 16 depthwise filter after reflection padding."""

    def __init__(self, channels, stride=2):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer('kernel', (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())
        self.stride = stride

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), self.kernel, stride=self.stride, groups=x.shape[1])


class ShuffleUnit(nn.Module):
    """ShuffleNet-v2 unit with Mish.  Stride 1 keeps half the channels and transforms the other
    half; stride 2 transforms all of them in two branches, downsampling with BlurPool."""

    def __init__(self, nin, nout, kernel_size, stride, batch_stats):
        super().__init__()
        if nout % 2 or (stride == 1 and nin != nout):
            raise ValueError(f'ShuffleUnit needs an even nout and nin == nout at stride 1, got {nin}->{nout}')
        half = nout // 2
        self.stride = stride
        self.shuffle = ChannelShuffle(2)
        bn = functools.partial(batch_norm, batch_stats=batch_stats)
        if stride == 1:
            self.branch1 = None
            self.branch2 = nn.Sequential(conv1x1(half, half), bn(half), nn.Mish(),
                                         depthwise(half, kernel_size), bn(half),
                                         conv1x1(half, half), bn(half), nn.Mish())
        else:
            self.branch1 = nn.Sequential(depthwise(nin, kernel_size), BlurPool(nin), bn(nin),
                                         conv1x1(nin, half), bn(half), nn.Mish())
            self.branch2 = nn.Sequential(conv1x1(nin, half), bn(half), nn.Mish(),
                                         depthwise(half, kernel_size), BlurPool(half), bn(half),
                                         conv1x1(half, half), bn(half), nn.Mish())

    def forward(self, x):
        if self.branch1 is None:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat([kept, self.branch2(transformed)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return self.shuffle(out)


def make_op(op_id, nin, nout, stride, batch_stats):
    """Op `op_id` of SEQ_OPS, nin -> nout channels at `stride`."""
    if op_id in (0, 1):
        return ShuffleUnit(nin, nout, 3 if op_id == 0 else 5, stride, batch_stats)
    layers = [conv1x1(nin, nout)]
    if op_id == 2:
        layers.append(nn.AvgPool2d(3, stride, padding=1))
    elif op_id == 3:
        layers.append(nn.MaxPool2d(3, stride, padding=1))
    # conv1x1_bn ignores the stride, as in the reference: the reduction block resizes its output.
    return nn.Sequential(*layers, batch_norm(nout, batch_stats))


def resize_to(x, size):
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


# ----------------------------------------------------------------------------- supernet

class Node(nn.Module):
    """Two ops, one per input, added.  `choices` are the op ids kept for each side: all of them in
    the supernet, the chosen one in a trained network (same names, so weights carry over)."""

    def __init__(self, nin, nout, stride, choices, batch_stats):
        super().__init__()
        self.x_ops = nn.ModuleDict({str(o): make_op(o, nin, nout, stride, batch_stats) for o in choices[0]})
        self.y_ops = nn.ModuleDict({str(o): make_op(o, nin, nout, stride, batch_stats) for o in choices[1]})

    def forward(self, x, y, op_x, op_y, drop_prob):
        x, y = self.x_ops[str(op_x)](x), self.y_ops[str(op_y)](y)
        # A node fed by an already reduced node comes out smaller; bring both to the larger map.
        size = max(x.shape[-2:], y.shape[-2:])
        drop_prob = drop_prob if self.training else 0.
        return drop_path(resize_to(x, size), drop_prob) + drop_path(resize_to(y, size), drop_prob)


class Block(nn.Module):
    """A normal or reduction block of SEQ_NODES nodes.  Every node output is concatenated and fused
    by BN -> Mish -> SE -> 1x1 into `nout` channels.  In a reduction block each node output is
    brought back to half the input resolution and `nin` channels so later nodes can reuse it."""

    def __init__(self, nin, nout, reduction, seq, batch_stats):
        super().__init__()
        self.reduction = reduction
        stride = 2 if reduction else 1
        self.nodes = nn.ModuleList()
        for n in range(SEQ_NODES):
            choices = (range(NUM_OPS), range(NUM_OPS)) if seq is None else ([seq[4 * n + 1]], [seq[4 * n + 3]])
            self.nodes.append(Node(nin, nout, stride, choices, batch_stats))
        self.calibrate = conv1x1(nout, nin) if reduction else None
        fused = nin * SEQ_NODES
        self.fuse = nn.Sequential(batch_norm(fused, batch_stats), nn.Mish(), SE(fused, reduction=SE_REDUCTION), conv1x1(fused, nout))

    def forward(self, seq, prev_prev, prev, drop_prob):
        size = prev.shape[-2:]
        states = [resize_to(prev_prev, size), prev]
        for n, node in enumerate(self.nodes):
            out = node(states[seq[4 * n]], states[seq[4 * n + 2]], seq[4 * n + 1], seq[4 * n + 3], drop_prob)
            if self.reduction:
                out = self.calibrate(resize_to(out, (size[0] // 2, size[1] // 2)))
            states.append(out)
        return self.fuse(torch.cat(states[2:], dim=1))


def stem(kernel_size, channels, stride4, batch_stats, blurpool=False):
    """The CIFAR stems are conv k x k (reflect padding) + BN at full resolution; the search (and
    large-image) stems reduce 4x with two conv 3x3 s2 + BN + Mish.  `blurpool` (with stride4): one
    conv 3x3 s2 + BN + Mish, then BlurPool s2, the second stem of SLNAS's image-folder retrainer."""
    if stride4 and blurpool:
        return nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1, padding_mode='reflect', bias=False),
                             batch_norm(channels, batch_stats), nn.Mish(), BlurPool(channels))
    if stride4:
        layers = []
        for nin in (3, channels):
            layers += [nn.Conv2d(nin, channels, 3, stride=2, padding=1, padding_mode='reflect', bias=False),
                       batch_norm(channels, batch_stats), nn.Mish()]
        return nn.Sequential(*layers)
    return nn.Sequential(nn.Conv2d(3, channels, kernel_size, padding=kernel_size // 2, padding_mode='reflect',
                                   bias=False), batch_norm(channels, batch_stats))


def block_layout(blocks):
    """[(reduction, channels_in, channels_out)] for a stage layout: `blocks[s]` normal blocks, then a
    reduction block doubling the width, per stage."""
    layout, stage_width = [], 1
    for repeat in blocks:
        layout += [(False, stage_width, stage_width)] * repeat
        layout.append((True, stage_width, 2 * stage_width))
        stage_width *= 2
    return layout


class Network(nn.Module):
    """The SLNAS network.  arch=None builds the supernet (batch-statistics BN, every op) whose
    forward takes the architecture; with an arch it builds that network alone (running-statistics
    BN) and forward(img) needs none.  Returns (logits, [auxiliary logits after each stage but the
    last]); the auxiliary heads are named `auxiliary_*` so parameter counts leave them out."""

    def __init__(self, out_filters, blocks, num_classes, arch=None, stride4_stem=False, blurpool_stem=False):
        super().__init__()
        self.arch = arch
        self.blocks = list(blocks)
        self.drop_path_prob = 0.0
        batch_stats = arch is None
        self.stem_3x3 = stem(3, out_filters, stride4_stem, batch_stats)
        self.stem_5x5 = stem(5, out_filters, stride4_stem, batch_stats, blurpool=blurpool_stem)
        self.cells = nn.ModuleList()
        self.skip_projections = nn.ModuleDict()
        for i, (reduction, width_in, width_out) in enumerate(block_layout(self.blocks)):
            seq = None if arch is None else (arch.reduce if reduction else arch.normal)
            self.cells.append(Block(out_filters * width_in, out_filters * width_out, reduction, seq, batch_stats))
            if reduction:
                # The skip input of the next block is projected to the new width here.
                self.skip_projections[str(i)] = conv1x1(out_filters * width_in, out_filters * width_out)
        self.aux_after = [i for i, (reduction, _, _) in enumerate(block_layout(self.blocks)) if reduction][:-1]
        self.auxiliary_heads = nn.ModuleList(
            nn.Linear(out_filters * 2 ** (s + 1), num_classes, bias=False) for s in range(len(self.aux_after)))
        self.classifier = nn.Linear(out_filters * 2 ** len(self.blocks), num_classes, bias=False)

    def forward(self, img, arch=None):
        arch = arch if arch is not None else self.arch
        if arch is None:
            raise ValueError('the supernet needs an architecture: model(img, arch)')
        prev_prev, prev = self.stem_3x3(img), self.stem_5x5(img)
        aux = []
        for i, cell in enumerate(self.cells):
            out = cell(arch.reduce if cell.reduction else arch.normal, prev_prev, prev, self.drop_path_prob)
            prev_prev, prev = prev, out
            if cell.reduction:
                prev_prev = self.skip_projections[str(i)](prev_prev)
            if i in self.aux_after:
                aux.append(self.auxiliary_heads[len(aux)](out.mean((2, 3))))
        return self.classifier(prev.mean((2, 3))), aux


def initialize_weights(model):
    """SLNAS's `utils.initialize_weights` (its image-folder search and retrainer): Kaiming-normal
    (fan out) convolutions, BatchNorms at 1 and 0, Linear weights N(0, 0.01), zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out')
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def inherit(child, supernet):
    """Copy the supernet weights of the child's ops (and everything shared) into `child`; its BN
    running statistics start fresh, the supernet has none."""
    source = supernet.state_dict()
    child.load_state_dict({name: value for name, value in source.items() if name in child.state_dict()}, strict=False)
    return child


def aux_loss(criterion, aux_logits, target):
    """Auxiliary heads weighted 0.1 (i + 1), normalised to sum 1 (the reference's search and retraining)."""
    if not aux_logits:
        return 0.0
    weights = [0.1 * (i + 1) for i in range(len(aux_logits))]
    return sum(w * criterion(a, target) for w, a in zip(weights, aux_logits)) / sum(weights)


def no_decay_groups(model, weight_decay):
    """Weight decay on >= 2-D parameters only; the search reference built these groups but handed
    SGD all parameters with decay; here both scripts use them."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': rest, 'weight_decay': 0.0}]


# ----------------------------------------------------------------------------- architectures

def input_limits():
    """Exclusive upper bound of every position of a 20-int sequence."""
    return [NUM_OPS if p % 2 else p // 4 + 2 for p in range(4 * SEQ_NODES)]


def random_seq(rng):
    return [int(rng.integers(limit)) for limit in input_limits()]


def random_arch(rng, blocks):
    return SeqArch(random_seq(rng), random_seq(rng), list(blocks))


def interleave(inputs, ops):
    return [v for pair in zip(inputs, ops) for v in pair]


# ----------------------------------------------------------------------------- controller

LSTM_SIZE = 256
TEMPERATURE = 5.0
TANH_CONSTANT = 1.1
OP_TANH_REDUCE = 2.5


class IndexLSTM(nn.Module):
    """Stage 1: an ENAS pointer LSTM choosing the two inputs of every node among the earlier
    states by attention over their anchors."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(NUM_OPS, LSTM_SIZE)
        self.lstm = nn.LSTMCell(LSTM_SIZE, LSTM_SIZE)
        self.w_attn_1 = nn.Linear(LSTM_SIZE, LSTM_SIZE, bias=False)
        self.w_attn_2 = nn.Linear(LSTM_SIZE, LSTM_SIZE, bias=False)
        self.v_attn = nn.Linear(LSTM_SIZE, 1, bias=False)

    def forward(self, given=None):
        """Sample (or score `given`) the 10 inputs of one block: (inputs, log_prob, entropy)."""
        start = self.embedding.weight[:1]
        zeros = torch.zeros_like(start)
        h, c = self.lstm(start, (zeros, zeros))
        anchors, keys = [zeros, zeros], [self.w_attn_1(h)] * 2
        chosen, log_prob, entropy, token = [], 0.0, 0.0, start
        for node in range(SEQ_NODES):
            for side in range(2):
                h, c = self.lstm(token, (h, c))
                scores = self.v_attn(torch.tanh(torch.cat(keys) + self.w_attn_2(h))).view(1, -1)
                logits = TANH_CONSTANT * torch.tanh(scores / TEMPERATURE)
                index = self._pick(logits, given, len(chosen))
                log_p = F.log_softmax(logits, dim=-1)
                log_prob = log_prob + log_p[0, index]
                entropy = entropy - (log_p.exp() * log_p).sum().detach()
                chosen.append(index)
                token = anchors[index]
            h, c = self.lstm(token, (h, c))
            anchors.append(h)
            keys.append(self.w_attn_1(h))
            token = start
        return chosen, log_prob, entropy

    @staticmethod
    def _pick(logits, given, position):
        if given is not None:
            return given[position]
        return int(torch.multinomial(F.softmax(logits, dim=-1), 1))


class OpLSTM(nn.Module):
    """Stage 2: a bidirectional LSTM reads the whole input sequence of a block and picks the op
    applied to every input."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(SEQ_NODES + 1, LSTM_SIZE)
        self.lstm = nn.LSTM(LSTM_SIZE, LSTM_SIZE, bidirectional=True)
        self.classifier = nn.Linear(2 * LSTM_SIZE, NUM_OPS)
        # The reference draws the initial state anew per sample; one fixed draw keeps the
        # probability of an architecture well defined.
        self.register_buffer('h0', torch.randn(2, 1, LSTM_SIZE) / 100)
        self.register_buffer('c0', torch.randn(2, 1, LSTM_SIZE) / 100)

    def forward(self, inputs, given=None):
        out, _ = self.lstm(self.embedding(torch.tensor(inputs, device=self.h0.device)).unsqueeze(1), (self.h0, self.c0))
        logits = TANH_CONSTANT / OP_TANH_REDUCE * torch.tanh(self.classifier(out.squeeze(1)) / TEMPERATURE)
        log_p = F.log_softmax(logits, dim=-1)
        if given is None:
            ops = torch.multinomial(log_p.exp(), 1).view(-1)
        else:
            ops = torch.tensor(given, device=logits.device)
        log_prob = log_p.gather(1, ops.view(-1, 1)).sum()
        entropy = -(log_p.exp() * log_p).sum().detach()
        return ops.tolist(), log_prob, entropy


class StageController(nn.Module):
    """The Stage LSTM: inputs then ops, for the normal and the reduction sequence."""

    def __init__(self):
        super().__init__()
        self.index_lstm = IndexLSTM()
        self.op_lstm = OpLSTM()

    def forward(self, blocks, given=None):
        """Sample an architecture, or score `given`: (SeqArch, log_prob, entropy)."""
        seqs, log_prob, entropy = [], 0.0, 0.0
        for cell in ('normal', 'reduce'):
            fixed = None if given is None else getattr(given, cell)
            inputs, lp_in, ent_in = self.index_lstm(None if fixed is None else fixed[0::2])
            ops, lp_op, ent_op = self.op_lstm(inputs, None if fixed is None else fixed[1::2])
            seqs.append(interleave(inputs, ops))
            log_prob, entropy = log_prob + lp_in + lp_op, entropy + ent_in + ent_op
        return SeqArch(seqs[0], seqs[1], list(blocks)), log_prob, entropy


class Lookahead:
    """Lookahead (Zhang et al., NeurIPS 2019) around an inner optimizer; with RAdam this is the
    Ranger optimizer the reference trains its controller with."""

    def __init__(self, inner, k=6, alpha=0.5):
        self.inner, self.k, self.alpha, self.steps = inner, k, alpha, 0
        self.param_groups = inner.param_groups
        self.slow = [[p.detach().clone() for p in g['params']] for g in self.param_groups]

    def zero_grad(self, set_to_none=True):
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = self.inner.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            with torch.no_grad():
                for group, slow in zip(self.param_groups, self.slow):
                    for p, s in zip(group['params'], slow):
                        s.add_(p - s, alpha=self.alpha)
                        p.copy_(s)
        return loss

    def state_dict(self):
        return {'inner': self.inner.state_dict(), 'slow': self.slow, 'steps': self.steps}

    def load_state_dict(self, state):
        self.inner.load_state_dict(state['inner'])
        self.steps = state['steps']
        with torch.no_grad():
            for mine, theirs in zip(self.slow, state['slow']):
                for s, t in zip(mine, theirs):
                    s.copy_(t)


def ranger(params, lr):
    return Lookahead(torch.optim.RAdam(params, lr=lr, betas=(0.95, 0.999), eps=1e-5))


# ----------------------------------------------------------------------------- samplers

class LSTMSampler:
    """REINFORCE on the Stage LSTM: reward = accuracy (%) + entropy_weight * entropy, advantage
    against an exponential moving average of the reward."""

    name = 'lstm'

    def __init__(self, blocks, lr, entropy_weight=1e-4, baseline_decay=0.95, device='cpu'):
        self.blocks = list(blocks)
        self.controller = StageController().to(device)
        self.optimizer = ranger(self.controller.parameters(), lr)
        self.entropy_weight, self.baseline_decay = entropy_weight, baseline_decay
        self.baseline = None

    def sample(self):
        with torch.no_grad():
            return self.controller(self.blocks)[0]

    def search(self, reward_fn, steps, log):
        """`steps` REINFORCE updates; `log(arch, reward, phase)` records every sampled arch."""
        for _ in range(steps):
            arch, log_prob, entropy = self.controller(self.blocks)
            accuracy = reward_fn(arch)
            log(arch, accuracy, 'controller')
            self.update(log_prob, accuracy + self.entropy_weight * float(entropy))

    def update(self, log_prob, reward):
        if self.baseline is None:
            self.baseline = reward
        self.baseline -= (1 - self.baseline_decay) * (self.baseline - reward)
        loss = -log_prob * (reward - self.baseline)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def candidates(self, count):
        return [self.sample() for _ in range(count)]

    def state_dict(self):
        return {'controller': self.controller.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'baseline': self.baseline}

    def load_state_dict(self, state):
        self.controller.load_state_dict(state['controller'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.baseline = state['baseline']


class RandomSampler:
    """Uniform random architectures (the paper's random-search baseline)."""

    name = 'random'

    def __init__(self, blocks, seed):
        self.blocks = list(blocks)
        self.rng = np.random.default_rng(seed)

    def sample(self):
        return random_arch(self.rng, self.blocks)

    def search(self, reward_fn, steps, log):
        for _ in range(steps):
            arch = self.sample()
            log(arch, reward_fn(arch), 'random')

    def candidates(self, count):
        return [self.sample() for _ in range(count)]

    def state_dict(self):
        return {'rng': self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state['rng']


class GASampler(RandomSampler):
    """The genetic-algorithm baseline (reference `nas_ga`): fitness is reward accuracy.  The next
    population's first parents are half drawn from the current one with probability proportional
    to fitness^2 and half fresh random individuals; each is recombined with a random member of the
    current population (each gene from the first parent with p = cross_rate) and mutated (each
    gene redrawn with p = mutation_rate).  The shared weights train on uniform random architectures."""

    name = 'ga'

    def __init__(self, blocks, seed, population=200, cross_rate=0.7, mutation_rate=0.001):
        super().__init__(blocks, seed)
        if population < 2:
            raise ValueError('the GA needs a population of at least 2')
        self.cross_rate, self.mutation_rate = cross_rate, mutation_rate
        self.population = [self.sample() for _ in range(population)]
        self.fitness = [0.0] * population

    def evaluate(self, reward_fn, log):
        self.fitness = []
        for arch in self.population:
            self.fitness.append(reward_fn(arch))
            log(arch, self.fitness[-1], 'ga')

    def breed(self):
        size = len(self.population)
        weights = np.asarray(self.fitness, dtype=float) ** 2
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(size, 1.0 / size)
        selected = [self.population[i] for i in self.rng.choice(size, size // 2, p=weights)]
        parents = selected + [self.sample() for _ in range(size - len(selected))]
        partners = [self.population[i] for i in self.rng.permutation(size)]
        self.population = [self.child(a, b) for a, b in zip(parents, partners)]

    def child(self, mother, father):
        genes = []
        for cell in ('normal', 'reduce'):
            m, f = getattr(mother, cell), getattr(father, cell)
            seq = [m[p] if self.rng.random() < self.cross_rate else f[p] for p in range(len(m))]
            genes.append([int(self.rng.integers(limit)) if self.rng.random() < self.mutation_rate else v
                          for v, limit in zip(seq, input_limits())])
        return SeqArch(genes[0], genes[1], list(self.blocks))

    def search(self, reward_fn, generations, log):
        for generation in range(generations):
            if generation:
                self.breed()
            self.evaluate(reward_fn, log)

    def candidates(self, count):
        order = np.argsort(self.fitness)[::-1][:count]
        return [self.population[i] for i in order]

    def state_dict(self):
        return {'rng': self.rng.bit_generator.state, 'population': [tuple(a) for a in self.population],
                'fitness': list(self.fitness)}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state['rng']
        self.population = [SeqArch(*a) for a in state['population']]
        self.fitness = list(state['fitness'])


def check_input(info, blocks, stride4_stem, blurpool_stem=False):
    """RGB images large enough that no reduction leaves an empty map; a BlurPool stem is a stride-4 one."""
    if blurpool_stem and not stride4_stem:
        raise UserError("--blurpool_stem is the second of the stride-4 stems: add --stride4_stem")
    if info.in_channels != 3:
        raise UserError(f"SLNAS networks take RGB images, the data set has {info.in_channels} channel(s); "
                        f"choose an RGB --dataset")
    size = info.image_size // 4 if stride4_stem else info.image_size
    if size < 2 ** len(blocks):
        raise UserError(f"{info.image_size}px images are {size}px after the stem, too small for {len(blocks)} "
                        f"reductions; use fewer stages in --blocks")


def parse_blocks(text):
    try:
        blocks = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--blocks {text!r} is not JSON; write it like \"[2,2]\"") from exc
    return validate_blocks(blocks)


def add_slnas_arguments(parser, out_filters, blocks, drop_path, initialize):
    """Flags the search and the retraining share."""
    g = parser.add_argument_group('SLNAS network')
    g.add_argument('--child_out_filters', type=int, default=out_filters, help='channels of the first stage')
    g.add_argument('--blocks', default=blocks,
                   help='normal blocks per stage as JSON; a reduction block ends every stage')
    g.add_argument('--stride4_stem', action=argparse.BooleanOptionalAction, default=None,
                   help='stems reducing 4x (default: on for search, off for retraining)')
    g.add_argument('--blurpool_stem', action='store_true',
                   help='with the stride-4 stems: the second is conv 3x3 s2 + BN + Mish + BlurPool (the SLNAS '
                        'image-folder retrainer)')
    g.add_argument('--initialize_weights', action=argparse.BooleanOptionalAction, default=initialize,
                   help="SLNAS's initialisation (Kaiming fan-out convs, Linear N(0, 0.01)); the reference applies it "
                        "in both searches and the image-folder retrainer, not in the CIFAR retrainer")
    g.add_argument('--droppath', '--drop_prob', dest='droppath', type=float, default=drop_path,
                   help='drop-path rate, ramped up linearly')
    g.add_argument('--aux_weight', type=float, default=0.4, help='weight of the auxiliary losses')
    return parser
