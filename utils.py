"""Small helpers shared by every script: errors, atomic files, meters, accuracy, seeding."""
import json
import os
import random
import tempfile

import numpy as np
import torch


class UserError(Exception):
    """A mistake in the user's input; scripts print `error: <message>` and exit with code 2."""


def atomic_write(path, write_fn, mode='wb'):
    """Write `path` through `write_fn(file)` into a temporary file in the same directory, fsync it
    and rename it over `path`, so a crash leaves either the old file or the new one, never half."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs should be as readable as any file
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text), mode='w')


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


def load_checkpoint_file(path, what='checkpoint'):
    """torch.load with a clear error for a missing or truncated file."""
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


