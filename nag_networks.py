"""NAG's evaluation networks: DAG cells in the NASNet/NAO skeleton.

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing
2021 (reference code kunjing96/NAG `build_nas_dataset/model.py` and `base_ops.py`), which takes its
skeleton from NAO: Luo et al., "Neural Architecture Optimization", NeurIPS 2018
(renqianluo/NAO_pytorch).  The DARTS skeleton (model.py) is the same stack (3N+2 cells, reductions
at N and 2N+1, auxiliary head after the second); what differs is the cell, the per-cell input
calibration, a dropout before the classifier, Kaiming initialisation and depth-scaled drop path.
The cell grammar is nag_cells.py, the one-shot supernet and the graph GAN nag.py.

Fixed with respect to the reference: identity vertices get no drop path (its test
`self.op != 'identity'` compared a module with a string, so they always did).  Deliberate
deviations: a cell input that no vertex and not the output reads is not calibrated (the reference
calibrated it anyway; unused weights would break DDP), and the drop-path ramp is the train
scripts' per-epoch one instead of NAO's per-step (step + 1) / steps.
"""
import torch
import torch.nn as nn

import nag_cells
from model import NetworkCIFAR, NetworkImageNet
from operations import OPS, FactorizedReduce, ReLUConvBN
from utils import UserError, drop_path


NAG_IDENTITY = nag_cells.REFERENCE_NAMES['identity']  # 'skip_connect'


def nag_stage_cells(layers, flag='--layers'):
    """N for a NAG network of `layers` = 3N + 2 cells (N normal cells per stage, two reductions)."""
    if layers < 2 or (layers - 2) % 3:
        raise UserError(f"{flag} {layers}: a NAG network has 3N+2 cells (N normal cells in each of 3 stages "
                        f"and 2 reduction cells), e.g. 8, 14 or 20")
    return (layers - 2) // 3


class NAOFactorizedReduce(FactorizedReduce):
    """NAO's FactorizedReduce: two paths of AvgPool(1, stride 2) and a 1x1 conv to C_out/2, the
    second shifted by one pixel (zero-padded at the far edge), concatenated, then BN.  A stride-2
    1x1 conv subsamples as AvgPool(1, 2) does, so this is operations.FactorizedReduce without its
    leading ReLU: NAO applies it straight to the cell inputs and vertex states."""

    def __init__(self, C_in, C_out):
        super().__init__(C_in, C_out)
        self.relu = nn.Identity()


class NAGVertex(nn.Module):
    """One op vertex: the op applied to the sum of the vertex's predecessors (`preds`, state
    indices; 0 and 1 are the cell inputs).  In a reduction cell the op runs at stride 2 when all
    predecessors are cell inputs (summed at full resolution); otherwise each cell input among them
    is first halved by its own NAOFactorizedReduce (the reference's `VertexInputSum`).  A
    stride-2 identity is a NAOFactorizedReduce."""

    def __init__(self, op, preds, C, reduction):
        super().__init__()
        self.preds = tuple(preds)
        strided = reduction and all(p < 2 for p in preds)
        self.halve_inputs = nn.ModuleDict({str(p): NAOFactorizedReduce(C, C)
                                           for p in preds if reduction and not strided and p < 2})
        if op == NAG_IDENTITY:
            self.op = NAOFactorizedReduce(C, C) if strided else nn.Identity()
        else:
            self.op = OPS[op](C, 2 if strided else 1, True)
        self.droppable = op != NAG_IDENTITY

    def forward(self, states, drop_prob):
        inputs = [self.halve_inputs[str(p)](states[p]) if str(p) in self.halve_inputs else states[p]
                  for p in self.preds]
        out = self.op(sum(inputs[1:], inputs[0]))
        return drop_path(out, drop_prob) if self.droppable else out


class NAGCell(nn.Module):
    """A NAG DAG cell (`nag_cells.CellSpec`) with C channels per vertex.  The inputs are calibrated as
    NAO's `MaybeCalibrateSize` does: c_{k-2} is halved (ReLU + FactorizedReduce) after a
    reduction cell, else given C channels by a ReLU-1x1 conv-BN if it has other than C; c_{k-1}
    likewise by channels only.  The output concatenates every state feeding the 'output' vertex
    (cell inputs included, halved by a NAOFactorizedReduce in a reduction cell): multiplier * C
    channels."""

    def __init__(self, spec, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        last = len(spec.ops) - 1
        read = {p for v in range(2, last + 1) for p in nag_cells.predecessors(spec, v)}
        self.preprocess0 = self.preprocess1 = None
        if 0 in read and reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        elif 0 in read and C_prev_prev != C:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        if 1 in read and C_prev != C:
            self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.vertices = nn.ModuleList(NAGVertex(spec.ops[t], nag_cells.predecessors(spec, t), C, reduction)
                                      for t in range(2, last))
        self.concat = tuple(nag_cells.predecessors(spec, last))
        self.halve_outputs = nn.ModuleDict({str(p): NAOFactorizedReduce(C, C)
                                            for p in self.concat if reduction and p < 2})
        self.multiplier = len(self.concat)

    def forward(self, s0, s1, drop_prob=0.):
        states = [s0 if self.preprocess0 is None else self.preprocess0(s0),
                  s1 if self.preprocess1 is None else self.preprocess1(s1)]
        drop_prob = drop_prob if self.training else 0.
        for vertex in self.vertices:
            states.append(vertex(states, drop_prob))
        return torch.cat([self.halve_outputs[str(p)](states[p]) if str(p) in self.halve_outputs else states[p]
                          for p in self.concat], dim=1)


class _NAGSkeleton:
    """What NAO's networks add to the DARTS skeletons: NAG cells (arch = (normal, reduce) CellSpecs),
    depth-scaled drop path, Dropout(1 - keep_prob) between the global pool and the classifier,
    and Kaiming-normal initialisation of every parameter with two or more dimensions."""

    depth_scaled_drop_path = True

    def _make_cell(self, arch, C_prev_prev, C_prev, C, reduction, reduction_prev, size):
        return NAGCell(arch[1] if reduction else arch[0], C_prev_prev, C_prev, C, reduction, reduction_prev)

    def _finish(self, keep_prob):
        if not 0. < keep_prob <= 1.:
            raise UserError(f"--keep_prob {keep_prob}: the classifier keeps a share of its inputs in (0, 1]")
        self.classifier = nn.Sequential(nn.Dropout(1. - keep_prob), self.classifier)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.kaiming_normal_(p)


class NAGNetworkCIFAR(_NAGSkeleton, NetworkCIFAR):
    """The reference's `NASNetworkCIFAR` for a (normal, reduce) pair of NAG cells: stem
    Conv3x3(3 -> 3C) + BN, `layers` = 3N+2 cells (reductions at N and 2N+1), the DARTS CIFAR
    auxiliary head after the second reduction, global pool, Dropout(1 - keep_prob), Linear.
    forward returns (logits, logits_aux) like NetworkCIFAR."""

    def __init__(self, C, num_classes, layers, auxiliary, arch, keep_prob=1., in_channels=3, image_size=32):
        nag_stage_cells(layers)
        super().__init__(C, num_classes, layers, auxiliary, arch, in_channels=in_channels, image_size=image_size)
        self._finish(keep_prob)


class NAGNetworkImageNet(_NAGSkeleton, NetworkImageNet):
    """The reference's `NASNetworkImageNet`: the DARTS ImageNet stems (the first cell reads the
    56x56 and 28x28 stem outputs), the NAG cell stack and head of NAGNetworkCIFAR, and NAO's
    ImageNet auxiliary head (BN after its 768-channel conv)."""

    auxiliary_batchnorm = True

    def __init__(self, C, num_classes, layers, auxiliary, arch, keep_prob=1., in_channels=3, image_size=224):
        nag_stage_cells(layers)
        super().__init__(C, num_classes, layers, auxiliary, arch, in_channels=in_channels, image_size=image_size)
        self._finish(keep_prob)
