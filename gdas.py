"""GDAS: `train_search.py --strategy gdas`, on the DARTS and the NAS-Bench-201 space.

Dong and Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019
(https://arxiv.org/abs/1910.04465); reference code D-X-Y/AutoDL-Projects,
`exps/NAS-Bench-201-algos/GDAS.py` and `xautodl/models/cell_searchs/search_model_gdas.py`.

Every forward of the supernet draws one candidate per edge (and per attention layer) by hard
Gumbel-softmax of the architecture weights at temperature tau and computes only that candidate
(`model_search.hard_gumbel_softmax`, `MixedEdge.forward_sampled`); the straight-through estimator
carries the loss's gradient to every weight of the edge.  Per step, as the reference: an SGD step of
the network weights on a batch of the weight half, then a first-order Adam step of the architecture
weights on a batch of the architecture half, each with its own draw.  tau falls linearly from
--tau_max in the first epoch to --tau_min in the last (the reference's 10 and 0.1).  The cell is
derived as DARTS derives it, from the architecture weights.

A draw differs per process, so that GDAS runs in one process (no torchrun), and its gradient is
first order (the reference's; a second-order step would difference two different draws).
"""
from userio import UserError


def add_arguments(parser):
    g = parser.add_argument_group('GDAS (--strategy gdas)')
    g.add_argument('--tau_max', type=float, default=10.0, help='Gumbel-softmax temperature in the first epoch')
    g.add_argument('--tau_min', type=float, default=0.1, help='Gumbel-softmax temperature in the last epoch')


def check_arguments(args):
    if args.unrolled:
        raise UserError("--unrolled: GDAS's architecture step is first order (a second-order step would difference "
                        "two different draws); drop --unrolled for --strategy gdas")
    if not 0 < args.tau_min <= args.tau_max:
        raise UserError(f"--tau_min and --tau_max must satisfy 0 < tau_min <= tau_max, got {args.tau_min} and "
                        f"{args.tau_max}")


def temperature(epoch, epochs, tau_max, tau_min):
    """The reference's tau in `epoch` (0-based) of `epochs`: tau_max - (tau_max - tau_min) * epoch /
    (epochs - 1), tau_max for a one-epoch search."""
    if epochs < 2:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)
