"""Every script's flags checked against their meaning, in one place, while the command line is parsed:
before any file is written or any data loaded.

Two tables, both keyed by a flag's destination (``--init_ch`` and ``--init_channels`` are both
``init_channels``):

- `CHECKS`: what a value must be.  A `Range` for a number (``--grad_clip`` above 0, ``--workers`` at
  least 0, ``--train_portion`` between 0 and 1 exclusive, ...), or a function of the string for
  anything else (``--device`` a device that exists, ``--arch_path`` a file and not a directory).
  `parse_args` puts each check in its action's ``type``, so argparse applies it to the value as typed
  and a refusal is one line naming the flag, the value and what is accepted; a number's range is
  also appended to its ``--help``.  Every ``int`` or ``float`` flag of every script must have an
  entry (tests/test_flags.py walks them all); a new flag adds its row here.
- `ON_RESUME`: the flags a ``--resume`` may change (see `resume_changes`); every other flag defines
  the run and must be given as the run was started.

A script parses with ``flags.parse_args(parser, argv)`` (``cli.parse`` does it): the
tables are applied to its parser, and argparse's own two-line usage-and-error becomes a `UserError`,
that is one line and exit status 2 under the scripts' ``cli`` wrapper.
"""
import argparse
import json
import math
import os

from userio import UserError


class Range:
    """The numbers a flag accepts: from `low` to `high` (None: unbounded), each end included unless
    `low_open` / `high_open`; `infinite` also accepts ``inf`` (for a clip norm: no clipping).  NaN is
    never accepted.  `note` says what a boundary value means (e.g. '0: off')."""

    def __init__(self, low=None, high=None, low_open=False, high_open=False, infinite=False, note=''):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.infinite, self.note = infinite, note

    def accepts(self, value):
        if math.isnan(value) or (math.isinf(value) and not (self.infinite and value > 0)):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, kind=float):
        """What is accepted, e.g. 'an integer at least 1' or 'a number above 0, or inf (inf: no clipping)'."""
        low, high = (f"{self.low}{' (excluded)' if self.low_open else ''}",
                     f"{self.high}{' (excluded)' if self.high_open else ''}")
        if self.low is not None and self.high is not None:
            text = f'from {low} to {high}'
        elif self.low is not None:
            text = f"{'above' if self.low_open else 'at least'} {self.low}"
        elif self.high is not None:
            text = f"{'below' if self.high_open else 'at most'} {self.high}"
        else:
            text = 'any value'
        text = f"{'an integer' if kind is int else 'a number'} {text}" + (', or inf' if self.infinite else '')
        return text + (f' ({self.note})' if self.note else '')


COUNT = Range(1)                       # sizes and counts the code divides by or loops over
POSITIVE = Range(0, low_open=True)     # rates and scales the code multiplies by
NON_NEGATIVE = Range(0)                # weights and decays: 0 turns them off
PROBABILITY = Range(0, 1)
RATE_BELOW_1 = Range(0, 1, high_open=True)   # dropout-like rates: 1 would drop everything
CLIP_NORM = Range(0, low_open=True, infinite=True, note='inf: no clipping')
SEED = Range(0)


def device(text):
    """--device: 'auto', 'cpu', 'cuda' or 'cuda:N', on a GPU that this machine has."""
    import torch  # here, not at the top: scripts without torch (drawing, records) parse their flags too
    if text in ('auto', 'cpu'):
        return text
    kind, _, index = text.partition(':')
    if kind != 'cuda' or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"unknown device '{text}'; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"'{text}' asked for CUDA but no GPU is visible; use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"'{text}': this machine has {torch.cuda.device_count()} GPU(s), "
                                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return text


def existing_file(what, names):
    """A path that must name a file, `what` (e.g. written by a search as one of `names`): a directory
    or a missing path is refused, saying which."""
    def check(text):
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text} is a directory; give the {what} (e.g. {names} inside it)")
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(f"{text} does not exist; give the path of the {what}")
        return text
    return check


CHECKS = {
    # shared by every training script (cli.add_common_arguments)
    'batch_size': COUNT, 'test_batch_size': COUNT, 'eval_batch_size': COUNT, 'train_batch_size': COUNT,
    'learning_rate': POSITIVE, 'learning_rate_min': NON_NEGATIVE,
    'momentum': PROBABILITY, 'weight_decay': NON_NEGATIVE,
    'epochs': COUNT, 'init_channels': COUNT, 'layers': COUNT,
    'grad_clip': CLIP_NORM, 'cutout_length': COUNT, 'seed': SEED,
    'workers': Range(0, note='0: load in the main process'),
    'report_freq': Range(0, note='0: no step lines in the log'),
    'checkpoint_steps': Range(0, note='0: only at epoch ends'),
    'image_size': Range(8), 'subset': Range(2),
    'device': device,
    # searches (search.py, collapse_guards.py, rsws.py)
    'arch_learning_rate': Range(0, note='0: the architecture weights stay as initialised'), 'arch_weight_decay': NON_NEGATIVE, 'arch_grad_clip': CLIP_NORM,
    'train_portion': Range(0, 1, low_open=True, high_open=True),
    'num_meta_node': Range(1, 8), 'partial_channels': Range(1, note='1: all channels'),
    'drop_path_prob': RATE_BELOW_1,
    'auxiliary_skip': NON_NEGATIVE, 'param_free_dropout': RATE_BELOW_1, 'param_free_dropout_decay': NON_NEGATIVE,
    'max_skip_connect': Range(0), 'early_stop_param_free': COUNT, 'early_stop_stable': COUNT,
    'early_stop_after': Range(0, note='0: from the first epoch'),
    'stage_layers': COUNT, 'stage_keep': Range(3),
    'rsws_samples': COUNT, 'rsws_top': COUNT, 'rsws_eval_batches': COUNT,
    # training a network (evaluation.py)
    'auxiliary_weight': NON_NEGATIVE, 'label_smooth': RATE_BELOW_1, 'adabelief_eps': POSITIVE,
    'decay_period': COUNT, 'gamma': POSITIVE, 'milestones': COUNT, 'schedule_epochs': COUNT,
    'keep_prob': Range(0, 1, low_open=True), 'se_reduction': COUNT,
    'arch_path': existing_file('genotype .json file', 'genotype.json or best_arch.json'),
    'model_path': existing_file('model file', 'trained.pt'),
    # SLNAS (train_search_slnas.py, retrain_slnas.py)
    'aux_weight': NON_NEGATIVE, 'droppath': RATE_BELOW_1, 'drop_path_ramp': Range(0, 1, low_open=True),
    'child_out_filters': COUNT, 'controller_lr': POSITIVE, 'controller_steps': COUNT, 'entropy_weight': NON_NEGATIVE,
    'bl_dec': PROBABILITY, 'candidates': COUNT, 'candidate_batches': COUNT,
    'population': Range(2), 'generations': COUNT, 'cross_rate': PROBABILITY, 'mutation_rate': PROBABILITY,
    # NAG (nag_generator.py, build_nas_dataset.py)
    'b1': RATE_BELOW_1, 'b2': RATE_BELOW_1, 'clip_value': Range(0, infinite=True, note='0: off'),
    'latent_dim': COUNT, 'label_embedding_size': COUNT, 'n_critic': COUNT,
    'n_perf_classes': COUNT, 'n_params_classes': COUNT, 'max_vertices': Range(4, note='two inputs, an op, the output'),
    'g_emb_size': COUNT, 'g_hidden_size': COUNT, 'g_num_layers': COUNT, 'g_dropout': RATE_BELOW_1,
    'd_emb_size': COUNT, 'd_hidden_size': COUNT, 'd_gnn_num_layers': COUNT, 'd_mlp_num_layers': COUNT,
    'd_gnn_dropout': RATE_BELOW_1, 'd_mlp_dropout': RATE_BELOW_1,
    'num': COUNT, 'search': Range(0, note='0: off'), 'search_epochs': COUNT,
    'acc_class': Range(0), 'params_class': Range(0),
    'num_archs': COUNT, 'score_epochs': Range(0, note='0: once after training'), 'eval_batches': COUNT,
    'eval_init_channels': COUNT, 'eval_layers': COUNT,
    # compare.py
    'seeds': COUNT, 'random_seed': SEED, 'jobs': COUNT, 'param_budget': POSITIVE,
    'latency_batch': COUNT, 'latency_repeats': COUNT, 'timing_repeats': Range(0, note='0: no timing'),
    # NAS-Bench-201, GDAS and the tabular search (train_search.py, tabular_search.py)
    'tau_max': POSITIVE, 'tau_min': POSITIVE,
    'budget': Range(1, note='look-ups, or simulated seconds with --time_column'), 'runs': COUNT,
    'sample_size': COUNT, 'rl_learning_rate': POSITIVE, 'ema_momentum': RATE_BELOW_1,
    # zero-cost proxies (rank.py, compare.py --prescreen, train_search.py --strategy proxy)
    'keep': COUNT, 'prescreen_batch': COUNT, 'samples': COUNT,
    # export and latency (export.py, measure_latency.py, train_search.py --latency_*)
    'atol': POSITIVE, 'check_batch': COUNT, 'batch': COUNT,
    'latency_weight': Range(0, note='0: latencies logged, not optimised'), 'latency_target': POSITIVE,
    # bench.py (step_measurements.py)
    'threads': Range(0, note="0: torch's default"), 'warmup': Range(0), 'repeats': COUNT, 'nodes': COUNT,
    'train_channels': COUNT, 'train_layers': COUNT,
}


def number(kind, check):
    """The argparse `type` of a numeric flag: `kind` (int or float) within `check` (a Range)."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{text}' is not {'an integer' if kind is int else 'a number'}; give {check.describe(kind)}") from None
        if not check.accepts(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {check.describe(kind)}")
        return value
    convert.__name__ = kind.__name__
    convert.kind, convert.range = kind, check
    return convert


def numeric_actions(parser):
    """The actions of `parser` that take numbers (before or after `install`), with their kind."""
    for action in parser._actions:
        kind = getattr(action.type, 'kind', action.type)
        if kind in (int, float):
            yield action, kind


def install(parser):
    """Put `CHECKS` into `parser`'s actions (once) and make its errors `UserError`s."""
    if getattr(parser, 'flags_installed', False):
        return parser
    for action in parser._actions:
        check = CHECKS.get(action.dest)
        if action.type in (int, float) and isinstance(check, Range) and action.choices is None:
            action.type = number(action.type, check)
            if action.help != argparse.SUPPRESS:
                action.help = f"{action.help or ''} [{check.describe(action.type.kind)}]".lstrip()
        elif action.type in (None, str) and callable(check) and action.option_strings:
            action.type = check
    parser.error = _error
    parser.flags_installed = True
    return parser


def _error(message):
    raise UserError(message)


def parse_args(parser, argv):
    """`parser.parse_args(argv)` with every flag checked (`install`); a bad one is a UserError."""
    return install(parser).parse_args(argv)


# --resume: the flags that may differ from the run's, with why.  'applied' flags change what the
# rest of the run does and are recorded in args.json's history and said in the log; everything not
# listed defines the run's state (architecture, data, batch, seed, optimiser) and must match.
ON_RESUME = {
    'epochs': 'more (or as many) epochs than the checkpoint holds: the learning-rate schedule is '
              'recomputed for the new length from the current epoch on',
    'learning_rate_min': 'the end of the cosine schedule, recomputed from the current epoch on',
    'report_freq': 'how often the log has a step line',
    'checkpoint_steps': 'how often a checkpoint is written inside an epoch',
    'no_progress': 'progress bars',
    'skip_nonfinite': 'skip batches with a NaN/inf loss instead of stopping (what a stopped run asks for)',
    'workers': 'loader processes: the same batches',
    'device': 'where it runs (the same run on another GPU or the CPU)',
    'data': "the data set's directory (the same data moved)",
    'kernels': 'the same network computed by other kernels',
    'channels_last': 'memory layout',
    'compile': 'torch.compile',
    'recompute_cells': 'memory: the same search with activations recomputed',
    'data_on_device': 'where augmentation runs',
    'deterministic': 'kernel choice',
    'plugins': 'the modules imported first; what they register that the run uses (a search\'s candidates, its '
               'data set) is checked by the run\'s signature, which names what changed',
}


def resume_epilog():
    """The --help epilog of the scripts that resume: which flags a --resume may change."""
    changeable = ', '.join(f'--{name}' for name in ON_RESUME)
    return (f"--resume continues a run with the flags it was started with. It may change {changeable} (each change "
            f"is said in the log and recorded in args.json's history; --epochs may only grow); any other flag "
            f"that differs is refused. A run stopped before its first checkpoint may be resumed with any flags "
            f"(it starts over).")


def resume_changes(stored, args, started):
    """{flag: (was, now)} for the flags of `args` (a Namespace) that differ from `stored` (the run's
    args.json) and that a resume may change.  Raises a UserError naming, as typed, every flag that
    differs and may not change, unless the run has not `started` (no checkpoint yet: it starts over
    with the new flags)."""
    now = vars(args)
    changes, refused = {}, []
    for name in sorted(set(stored) & set(now) - UNRECORDED):  # a flag of another version is not compared
        was, value = stored[name], as_json(now[name])
        if was == value:
            continue
        if started and name not in ON_RESUME:
            refused.append(f"--{name} {shown(value)} (the run's: {shown(was)})")
        else:
            changes[name] = (was, value)
    if refused:
        raise UserError(f"--resume may not change {', '.join(refused)}: give the run's values (its args.json), "
                        f"or start a new run with another --save")
    return changes


# Said by the command itself, not by the run.
UNRECORDED = {'save', 'resume', 'dry_run', 'history'}


def as_json(value):
    """`value` as it reads back from args.json (tuples become lists)."""
    return json.loads(json.dumps(value))


def shown(value):
    """A flag's value as the log and the messages say it: on/off, space-separated lists, 'unset'."""
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, list):
        return ' '.join(map(str, value))
    return 'unset' if value is None else str(value)
