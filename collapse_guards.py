"""Guards against the collapse of DARTS-style searches onto parameter-free ops, as options of the
search loop (`train_search.py`).

After enough epochs the normal cell of a DARTS search fills with skip connections and pooling,
and the cell it returns is worse than a random one (Zela et al., "Understanding and Robustifying
Differentiable Architecture Search", ICLR 2020).  The remedies here, each off by default:

    --auxiliary_skip A         DARTS- (Chu et al., "DARTS-: Robustly Stepping out of Performance
                               Collapse without Indicators", ICLR 2021): every op mixture gets an
                               extra skip connection of weight a(t), decayed from A to 0 over the
                               search (linearly, or `cosine`), so that skip_connect's advantage in
                               gradient flow is shared by all candidates
    --param_free_dropout P     P-DARTS (Chen et al., "Progressive Differentiable Architecture
                               Search", ICCV 2019): dropout at rate P * exp(-decay * epoch) on the
                               outputs of the op layer's parameter-free candidates
    --max_skip_connect M       P-DARTS: the derived normal cell keeps at most M skip connections
                               (the weakest are dropped and the cell derived again)
    --early_stop_param_free N  DARTS+ (Liang et al., "DARTS+: Improved Differentiable Architecture
                               Search with Early Stopping", 2019): stop when the derived normal cell
                               has N or more parameter-free ops
    --early_stop_stable E      DARTS+: stop when the ranking of the learnable candidates of every
                               edge has not changed for E epochs
    --early_stop_after S       the two DARTS+ rules stop a search only after its first S epochs
                               (0, DARTS+, by default): in the first epochs the weights are near
                               uniform and pools lead many edges, which is not the collapse that the
                               parameter-free rule is meant to catch

The schedules are functions of the epoch, so a resumed search replays them exactly; the stopping
rules read the metrics of the epochs before, which a resume keeps.  No torch here.
"""
import math

from search_diagnostics import PARAMETER_FREE
from userio import UserError

DECAYS = ('linear', 'cosine')


def add_arguments(parser):
    g = parser.add_argument_group('collapse guards (DARTS-, P-DARTS, DARTS+; all off by default)')
    g.add_argument('--auxiliary_skip', type=float, default=0.0, metavar='A',
                   help='DARTS-: an auxiliary skip connection on every op mixture, its weight decayed from A '
                        '(1 in the paper) to 0')
    g.add_argument('--auxiliary_skip_decay', choices=DECAYS, default='linear',
                   help='how the auxiliary skip weight decays over the epochs')
    g.add_argument('--param_free_dropout', type=float, default=0.0, metavar='P',
                   help='P-DARTS: dropout on the parameter-free candidates of the op layer, at rate P * '
                        'exp(-decay * epoch)')
    g.add_argument('--param_free_dropout_decay', type=float, default=0.2,
                   help="decay of that rate per epoch (P-DARTS's 0.2)")
    g.add_argument('--max_skip_connect', type=int, default=None, metavar='M',
                   help='P-DARTS: at most M skip connections in the derived normal cell (2 in the paper)')
    g.add_argument('--early_stop_param_free', type=int, default=None, metavar='N',
                   help='DARTS+: stop when the derived normal cell has N or more parameter-free ops')
    g.add_argument('--early_stop_stable', type=int, default=None, metavar='E',
                   help='DARTS+: stop when the ranking of the learnable candidates has been stable for E epochs '
                        '(10 in the paper)')
    g.add_argument('--early_stop_after', type=int, default=0, metavar='S',
                   help='the DARTS+ rules stop the search only after its first S epochs (0: from the first, as DARTS+)')


def check_arguments(args):
    if args.early_stop_after and args.early_stop_param_free is None and args.early_stop_stable is None:
        raise UserError("--early_stop_after delays the DARTS+ rules: add --early_stop_param_free N or "
                        "--early_stop_stable E, or drop it")


def auxiliary_skip_weight(initial, epoch, epochs, decay='linear'):
    """DARTS-'s auxiliary skip weight in `epoch` (0-based) of `epochs`: from `initial` at epoch 0
    towards 0 at the end."""
    progress = epoch / epochs
    if decay == 'linear':
        return initial * (1 - progress)
    return initial * 0.5 * (1 + math.cos(math.pi * progress))


def dropout_rate(initial, epoch, decay):
    """P-DARTS's dropout rate of the parameter-free candidates in `epoch` (0-based)."""
    return initial * math.exp(-decay * epoch)


def learnable_ranking(tables):
    """{table: per edge, the learnable candidates (not in search_diagnostics.PARAMETER_FREE) from
    the strongest to the weakest}, of alphas.jsonl-style tables; ties keep the candidate order."""
    out = {}
    for name, content in tables.items():
        names = content['candidates']
        learnable = [k for k, candidate in enumerate(names) if candidate not in PARAMETER_FREE]
        out[name] = [[names[k] for k in sorted(learnable, key=lambda k: -row[k])] for row in content['values']]
    return out


class Guards:
    """The guards a search was asked for (`args` of add_arguments, plus `use_sparse`)."""

    def __init__(self, args):
        check_arguments(args)
        self.args = args

    def begin_epoch(self, model, epoch):
        """Set this epoch's auxiliary skip weight and dropout rate on `model`; returns them as
        metrics (only those switched on)."""
        a = self.args
        weight = auxiliary_skip_weight(a.auxiliary_skip, epoch, a.epochs, a.auxiliary_skip_decay)
        rate = dropout_rate(a.param_free_dropout, epoch, a.param_free_dropout_decay)
        model.set_guards(weight, rate)
        return {**({'auxiliary_skip_weight': weight} if a.auxiliary_skip else {}),
                **({'param_free_dropout': rate} if a.param_free_dropout else {})}

    def derive(self, model):
        return model.genotype(sparse=self.args.use_sparse, max_skip_connect=self.args.max_skip_connect)

    def end_epoch(self, epoch, record, tables, previous):
        """The stopping rules' metrics for the `record` (with its diagnostics) of `epoch` (0-based)
        and the previous epoch's record (None in the first): the ranking and for how many epochs it
        has been stable, and `early_stop` (the reason) when a rule fires after --early_stop_after
        epochs."""
        a, out, reasons = self.args, {}, []
        if a.early_stop_stable is not None:
            ranking = learnable_ranking(tables)
            stable = (previous['ranking_stable_epochs'] + 1
                      if previous and previous.get('learnable_ranking') == ranking else 0)
            out.update(learnable_ranking=ranking, ranking_stable_epochs=stable)
            if stable >= a.early_stop_stable:
                reasons.append(f'the learnable candidates\' ranking has been stable for {stable} epochs')
        free = record.get('param_free_normal')
        if a.early_stop_param_free is not None and free is not None and free >= a.early_stop_param_free:
            reasons.append(f'the normal cell has {free} parameter-free ops (--early_stop_param_free '
                           f'{a.early_stop_param_free})')
        if reasons and epoch + 1 > a.early_stop_after:
            out['early_stop'] = '; '.join(reasons)
        return out
