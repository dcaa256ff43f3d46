"""A run directory: its checks (--save, --resume), its files (args.json, log.txt, metrics.jsonl,
checkpoint.pt), the comparison of a resume's flags with the run's (flags.py) and the signature check
that refuses to resume another architecture or setting."""
import json
import logging
import logging.handlers
import os
import time

import torch.distributed as dist

import flags
import userio
import utils
from cli import configure_logging, logger
from devices import distributed, is_main
from tensorboard_logger import TensorBoardLogger
from utils import UserError

CHECKPOINT = 'checkpoint.pt'


def _names_changed(stored, wanted):
    """' (added X; removed Y)' between two lists of names, e.g. the candidates of a layer."""
    added = [name for name in wanted if name not in stored]
    removed = [name for name in stored if name not in wanted]
    parts = ([f"added {', '.join(added)}"] if added else []) + ([f"removed {', '.join(removed)}"] if removed else [])
    return f" ({'; '.join(parts or ['reordered'])})"


def signature_differences(stored, wanted):
    """The settings in which two run signatures (JSON objects) differ; for lists of names (the
    candidates of a search) also the names added and removed."""
    try:
        a, b = json.loads(stored), json.loads(wanted)
    except (TypeError, json.JSONDecodeError):
        return 'its format'

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            return [name for key in sorted(set(x) | set(y))
                    for name in walk(x.get(key), y.get(key), f'{prefix}{key}.')]
        if x == y:
            return []
        name = prefix.rstrip('.')
        if name == 'candidates' and x is None:
            return ['candidates (earlier versions did not record them: finish that run with the version that '
                    'wrote it, or start anew)']
        if all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in (x, y)):
            return [name + _names_changed(x, y)]
        return [name]
    return ', '.join(walk(a, b, '')) or 'nothing'


def run_directory(save, resume, kind, marker='args.json', checkpointed=True):
    """The directory of a run: `save`, or a new one named by `kind` and the time.  A `resume` needs
    `save` to hold `marker` (what a started run has written); a new run needs it new or empty, so
    that nothing already there is overwritten.  `checkpointed`: the run writes checkpoint.pt, so a
    directory with `marker` and no checkpoint holds a run stopped before its first one."""
    directory = save or os.path.join('runs', f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume:
        if not save:
            raise UserError('--resume needs --save RUN_DIR, the run directory to continue')
        if not os.path.isfile(os.path.join(directory, marker)):
            raise UserError(f"nothing to resume: {directory} is not a run directory (no {marker}); "
                            f"start the run without --resume")
    elif os.path.isdir(directory) and os.listdir(directory):
        if checkpointed and os.path.isfile(os.path.join(directory, marker)) and not any(
                name == CHECKPOINT for _, _, names in os.walk(directory) for name in names):
            raise UserError(f"run directory {directory} holds a run stopped before its first checkpoint; pass "
                            f"--resume to start it over there with these flags, or choose a new --save")
        raise UserError(f"run directory {directory} already exists; pass --resume to continue it "
                        f"or choose a new --save")
    return directory


class Run:
    """A run directory, created fresh or reopened with `resume`.  `signature` identifies the
    architecture and setting.

    The constructor only checks and writes nothing: the directory, a new flag set or another run's
    checkpoint is refused (`flags.resume_changes`: a flag that defines the run and differs is named
    as typed).  `start` (called by `fit`, or by a script before it writes anything else) creates the
    directory, log.txt and args.json once the script has found its data, so that a command refused
    before then leaves nothing behind.  On resume, the flags `flags.ON_RESUME` lets change are
    applied: logged and appended to args.json's 'history'."""

    def __init__(self, save, args, resume=False, kind='run', signature=None):
        self.dir = run_directory(save, resume, kind)
        self.args, self.resume, self.signature, self.checkpoint = args, resume, signature, None
        self.record = flags.as_json(vars(args))  # the flags as they are now, for args.json
        self.changes, self.started = {}, False
        if resume:
            stored = userio.read_json(self.path('args.json'), 'the run\'s flags')
            if os.path.exists(self.path(CHECKPOINT)):
                self.checkpoint = utils.load_checkpoint_file(self.path(CHECKPOINT))
            self.changes = flags.resume_changes(stored, args, started=self.checkpoint is not None)
            self.history = stored.get('history', [])
            if self.checkpoint is not None:
                self._check_checkpoint()
        # Until `start`, log lines are kept for log.txt.
        configure_logging(level=logging.INFO if is_main() else logging.WARNING)
        self._early_log = logging.handlers.MemoryHandler(10 ** 6, flushLevel=logging.CRITICAL + 1)
        logger.addHandler(self._early_log)

    def _check_checkpoint(self):
        done = self.checkpoint['epoch']
        if self.checkpoint.get('signature') != self.signature:
            raise UserError(f"{self.path(CHECKPOINT)} belongs to another architecture or setting "
                            f"(differs in: {signature_differences(self.checkpoint.get('signature'), self.signature)}); "
                            f"resume with the flags and --plugins of that run")
        epochs = getattr(self.args, 'epochs', None)
        if epochs is not None and epochs < done and not self.checkpoint.get('early_stop'):
            raise UserError(f"--resume: --epochs {epochs} is fewer than the {done} epochs the run has done; "
                            f"give --epochs {done} or more")

    def start(self):
        """Create the run directory (once): log.txt, and args.json (with the history of resumes)."""
        if self.started:
            return
        self.started = True
        if distributed():
            # Every rank has checked the directory before rank 0 creates it.
            dist.barrier()
        if not is_main():
            logger.removeHandler(self._early_log)
            configure_logging(level=logging.WARNING)
            self.tensorboard = TensorBoardLogger(None)
            return
        try:
            os.makedirs(self.dir, exist_ok=True)
            probe = self.path('.write-test')
            with open(probe, 'w'):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise UserError(f"cannot write the run directory {self.dir} ({exc.strerror}); "
                            f"choose a writable --save") from exc
        early = self._early_log
        configure_logging(self.path('log.txt'))
        for record in early.buffer:
            if record.levelno >= logging.INFO:
                logger.handlers[-1].handle(record)  # to log.txt; stdout has had them
        early.close()
        self.tensorboard = TensorBoardLogger(self.dir)
        record = self.record
        if self.resume and self.changes:
            said = '; '.join(f'--{name} {flags.shown(now)}, was {flags.shown(was)}'
                             for name, (was, now) in self.changes.items())
            logger.info('resuming with %s', said)
            entry = {'resumed': time.strftime('%Y-%m-%dT%H:%M:%S'),
                     'changed': {name: {'was': was, 'now': now} for name, (was, now) in self.changes.items()}}
            if self.checkpoint is None:
                entry['note'] = 'no checkpoint yet: started over with these flags'
            utils.atomic_write_json(self.path('args.json'), {**record, 'history': [*self.history, entry]})
        elif not self.resume:
            utils.atomic_write_json(self.path('args.json'), record)

    def path(self, name):
        return os.path.join(self.dir, name)

    def append_jsonl(self, name, record):
        if not is_main():
            return
        with open(self.path(name), 'a') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def read_jsonl(self, name):
        if not os.path.exists(self.path(name)):
            return []
        with open(self.path(name)) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_jsonl(self, name, epochs_done):
        """Drop records of epochs past the checkpoint (written after it, before a kill)."""
        if not is_main() or not os.path.exists(self.path(name)):
            return
        with open(self.path(name)) as f:
            lines = [line for line in f if line.strip()]
        kept = []
        for line in lines:
            try:
                if json.loads(line)['epoch'] < epochs_done:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                break  # a line cut by the kill, and anything after it
        if len(kept) != len(lines):
            utils.atomic_write_text(self.path(name), ''.join(kept))
