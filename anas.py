"""ANAS: CIFAR ResNets with an attention unit in every residual block, and the network that searches it.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (the CIFAR
variants, 6n+2 layers); SE: Hu, Shen and Sun, CVPR 2018; the searched unit: Dang, "Exploring
Attention Convolutional Neural Network via Neural Architecture Search", 2019 (reference code
DangChuong-DC/Attention-Neural-Architecture-Search, `anas/res_att_cifar.py` and `anas/model.py`
for the evaluation network, `anas/model_search.py` and `anas/res_att_search_cifar.py` for the
search network).

The shortcut is the ANAS code's option B (1x1 conv + BN where the shape changes) for every
attention kind, so none / SE / searched differ only in the unit.  The searched unit's drop path
works (the reference's was inert).  The search network is a CIFAR ResNet whose blocks all hold a
mixed attention unit; one architecture table is shared by all units.  The reference's skip-connect
dropout (`id_reg`) is never switched on there and is left out.  Its search loop is search.py's
(`run_anas`, search_net.py).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from attention import SE
from genotypes import ATT_PRIMITIVES, AttGenotype
from model_search import MixedEdge, strongest_edges
from operations import StridedPointwiseConv, is_identity, make_candidate
from utils import UserError, drop_path


RESNET_BLOCKS = {'resnet20': 3, 'resnet32': 5, 'resnet44': 7, 'resnet56': 9, 'resnet110': 18}
RESNET_ATTENTIONS = ('none', 'se', 'anas')
# The ANAS code's se_resnet_cifar/ CifarSEBasicBlock default, not the SENet paper's 16.
SE_REDUCTION = 1


def check_net_type(net_type):
    if net_type not in RESNET_BLOCKS:
        raise UserError(f"unknown --net_type '{net_type}'; choose from {', '.join(RESNET_BLOCKS)}")
    return RESNET_BLOCKS[net_type]


class AttentionUnit(nn.Module):
    """The fixed ANAS unit of an `AttGenotype`: both inputs are x, node i sums its two edges,
    output x * sigmoid(sum of the nodes).  `none` edges are not built (their term is zero); with
    `drop_prob` (training only) every non-identity edge gets drop path, as in DARTS cells."""

    def __init__(self, genotype, C):
        super().__init__()
        self._ops = nn.ModuleList()
        nodes = []
        for node in range(len(genotype.att) // 2):
            edges = []
            for op, j in genotype.att[2 * node:2 * node + 2]:
                if op == 'none':
                    continue
                module = make_candidate(op, C, 1, None, None, affine=True)
                edges.append((j, len(self._ops), not is_identity(module)))
                self._ops.append(module)
            nodes.append(tuple(edges))
        self._nodes = tuple(nodes)

    def forward(self, x, drop_prob=0.):
        states = [x, x]
        drop = self.training and drop_prob > 0.
        for edges in self._nodes:
            node = torch.zeros_like(x) if not edges else 0.
            for j, position, droppable in edges:
                h = self._ops[position](states[j])
                if drop and droppable:
                    h = drop_path(h, drop_prob)
                node = node + h
            states.append(node)
        return x * torch.sigmoid(sum(states[2:]))


class BasicBlock(nn.Module):
    """conv3x3 - BN - ReLU - conv3x3 - BN - attention - (+ shortcut) - ReLU."""

    def __init__(self, inplanes, planes, stride, attention=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = attention
        self.shortcut = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(StridedPointwiseConv(inplanes, planes, stride),
                                          nn.BatchNorm2d(planes))

    def forward(self, x, attention_args=()):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attention is not None:
            out = self.attention(out, *attention_args)
        return torch.relu(out + self.shortcut(x))


class ResNetBody(nn.Module):
    """The CIFAR ResNet skeleton: conv3x3(16) + BN + ReLU, three stages of n blocks (16, 32, 64
    channels, stride 2 at the start of stages 2 and 3), global pool, Linear(64).  `make_attention(C)`
    gives each block's unit (or None); `_logits(x, attention_args)` passes the same extra
    arguments to every unit (the drop-path rate, or the shared architecture weights)."""

    def __init__(self, net_type, num_classes, make_attention, in_channels=3):
        super().__init__()
        n = check_net_type(net_type)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList()
        inplanes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                self.blocks.append(BasicBlock(inplanes, planes, stride, make_attention(planes)))
                inplanes = planes
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _logits(self, x, attention_args=()):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, attention_args)
        return self.classifier(self.global_pooling(x).flatten(1))


class ResNetCIFAR(ResNetBody):
    """ResNet-20/32/44/56/110 with `attention` 'none', 'se' (SE with `se_reduction`) or 'anas' (the
    unit of `genotype`) after bn2 of every block.  Like the other evaluation networks, forward
    returns (logits, None): there is no auxiliary head."""

    def __init__(self, net_type, num_classes, attention='anas', genotype=None, se_reduction=SE_REDUCTION,
                 in_channels=3):
        if attention not in RESNET_ATTENTIONS:
            raise UserError(f"unknown --attention '{attention}'; choose from {', '.join(RESNET_ATTENTIONS)}")
        if attention == 'anas' and genotype is None:
            raise UserError("--attention anas needs the searched unit: --arch NAME or --arch_path FILE.json")
        if se_reduction < 1:
            raise UserError(f"--se_reduction must be at least 1, got {se_reduction}")
        factories = {'none': lambda C: None,
                     'se': lambda C: SE(C, reduction=se_reduction),
                     'anas': lambda C: AttentionUnit(genotype, C)}
        super().__init__(net_type, num_classes, factories[attention], in_channels)
        self.attention_kind = attention
        self.drop_path_prob = 0.

    def forward(self, x):
        if self.attention_kind != 'anas':
            return self._logits(x), None
        return self._logits(x, (self.drop_path_prob if self.training else 0.,)), None


# The search network.

class MixedAttentionUnit(nn.Module):
    """The searchable unit: both inputs are x; `steps` nodes over 2 + 3 + ... mixed edges of
    ATT_PRIMITIVES (non-affine, pools without BN); output x * sigmoid(sum of the nodes)."""

    def __init__(self, C, steps=3):
        super().__init__()
        self.steps = steps
        self.edges = nn.ModuleList(MixedEdge(ATT_PRIMITIVES, C, 1, None, None, affine=False, pool_bn=False)
                                   for i in range(steps) for _ in range(2 + i))

    def forward(self, x, weights):
        states, offset = [x, x], 0
        for _ in range(self.steps):
            edges = range(offset, offset + len(states))
            states.append(self.node(states, edges, weights))
            offset += len(edges)
        return x * torch.sigmoid(sum(states[2:]))

    def node(self, states, edges, weights):
        return sum(self.edges[e](h, weights[e]) for e, h in zip(edges, states))


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
