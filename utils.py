"""Small helpers shared by every script: errors, atomic files, meters, accuracy, drop path, seeding,
substituted module tensors."""
import contextlib
import os
import random

import numpy as np
import torch

from userio import UserError, atomic_write, atomic_write_json, atomic_write_text  # noqa: F401 (re-exported)


def atomic_torch_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint_file(path, what='checkpoint'):
    """torch.load with a clear error for a missing or truncated file."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a directory; give the path of the file in it")
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged zip/pickle
        raise UserError(f"{what} {path} is truncated or corrupt ({type(exc).__name__}); "
                        f"use an intact file or start a new run") from exc


class AverageMeter:
    def __init__(self):
        self.sum = 0.0
        self.count = 0

    def update(self, value, n=1):
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


def accuracy(logits, target, topk=(1,)):
    """Top-k accuracies in percent."""
    maxk = min(max(topk), logits.size(1))
    _, pred = logits.topk(maxk, dim=1)
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).float().mean().item() * 100.0 for k in topk]


def count_parameters_in_MB(model):
    """Parameters in millions, without the auxiliary head (it is dropped at test time)."""
    return sum(p.numel() for name, p in model.named_parameters() if 'auxiliary' not in name) / 1e6


def drop_path(x, drop_prob):
    """Zero whole samples with probability `drop_prob` and rescale the rest by 1 / keep: the drop
    path of the DARTS cells (quark0/darts `utils.drop_path`), and of NAG, ANAS and SLNAS (whose
    reference `DropPath_` is the same Bernoulli(keep) per-sample mask and division by keep).

    The mask is drawn on x's device in x's dtype; the scale is folded into the (N, 1, ..., 1) mask
    so the full tensor is touched once.  Out of place, so autograd is safe.  Callers pass 0 outside
    training.
    """
    if drop_prob <= 0.:
        return x
    keep = 1. - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
    mask.bernoulli_(keep).div_(keep)
    return x * mask


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state():
    state = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextlib.contextmanager
def substituted(module, tensors):
    """`module` computing with `tensors` ({name: tensor}) in place of its parameters and buffers of
    those names, inside.  Unlike `torch.func.functional_call`, which puts the module's own tensors
    back when the forward returns, the substitution lasts for the backward pass too, where a
    recomputed forward (`SearchNetwork(recompute_cells=True)`) must see the same tensors."""
    swapped = []
    try:
        for name, tensor in tensors.items():
            prefix, _, leaf = name.rpartition('.')
            owner = module.get_submodule(prefix)
            table = owner._parameters if leaf in owner._parameters else owner._buffers
            swapped.append((table, leaf, table[leaf]))
            table[leaf] = tensor
        yield
    finally:
        for table, leaf, original in reversed(swapped):
            table[leaf] = original
