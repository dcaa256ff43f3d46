"""The one training loop behind every search and train script.

A script parses its flags (cli.py), places a model (devices.py), opens a run directory (runs.py),
builds a per-batch `step`, and hands them to `fit`, which owns the epoch loop, progress bars,
metrics logs, atomic checkpoints and exact resume, and the non-finite-loss guard.  The data
loaders of a run come from here too.
"""
import signal
import threading
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

import datasets
import utils
from cli import logger
from devices import all_sum, distributed, is_main
from runs import CHECKPOINT
from utils import UserError


class NonFiniteGuard:
    """Stops a run at the first NaN/inf loss, or skips such batches with `--skip_nonfinite`.
    Under torchrun the processes decide together: a non-finite loss on any of them stops or skips
    the step on all of them, since one process skipping a step that the others take would leave
    their collectives unmatched (a hang) and their weights apart."""

    def __init__(self, skip):
        self.skip = skip
        self.skipped = 0

    def ok(self, loss, where):
        nonfinite = torch.logical_not(torch.isfinite(loss).all()).to(torch.int32)
        if distributed():
            dist.all_reduce(nonfinite, op=dist.ReduceOp.MAX)
        if not nonfinite.item():
            return True
        here = f'({loss.item()})' if not torch.isfinite(loss).all() else 'on another process'
        if not self.skip:
            raise UserError(f"non-finite loss {here} at {where}; the last good checkpoint is kept. "
                            f"Lower --learning_rate, or pass --skip_nonfinite to skip such batches")
        self.skipped += 1
        logger.warning('skipping batch with non-finite loss %s at %s', here, where)
        return False


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint at the current step has been written."""


class StopRequest:
    """Turns SIGTERM and SIGINT (what schedulers send before preemption) into a flag that the
    loop checks between steps, so the checkpoint it writes is consistent."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def agree(self, device):
        if all_sum([1.0 if self.signal else 0.0], device)[0] and not self.signal:
            self.signal = 'SIGTERM on another rank'

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def optimize(loss, optimizer, parameters, grad_clip, guard, where, scaler=None):
    """Backward, gradient-norm clipping and an optimizer step, unless `guard` vetoes a non-finite
    loss (then False).  With a GradScaler (fp16) the loss is scaled and the gradients unscaled
    before clipping."""
    if not guard.ok(loss, where):
        return False
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    return True


class EpochContext:
    """What `run_epoch` gets: the epoch number, the non-finite guard, and `train()`, which runs the
    training steps of the epoch and can stop and resume in the middle of it."""

    def __init__(self, epoch, guard, args, save, stop, resume_point=None, device=None):
        self.epoch, self.guard, self.args, self._device = epoch, guard, args, device
        self._save, self._stop = save, stop
        self._resume = resume_point

    def train(self, batches, step, total, desc):
        """Call `step(batch, where, guard)` on every batch; it returns (loss, logits, target), or
        None for a skipped batch.  Returns the epoch's mean loss and top-1 accuracy.

        `batches` must yield the same sequence when iterated again after the same re-seeding (fit
        re-seeds the loaders' generators every epoch), so a resume replays the skipped part."""
        losses, top1 = utils.AverageMeter(), utils.AverageMeter()
        iterator, first = iter(batches), 0
        if self._resume:
            first = self._resume['step']
            for _ in range(first):
                next(iterator)  # the data order and augmentation draws of the finished steps
            (losses.sum, losses.count), (top1.sum, top1.count) = self._resume['meters']
            self.guard.skipped = self._resume['skipped']
            utils.set_rng_state(self._resume['rng'])
            self._resume = None
        every = self.args.checkpoint_steps
        bar = tqdm(iterator, total=total, initial=first, desc=desc, leave=False, dynamic_ncols=True,
                   disable=self.args.no_progress or None)
        for i, batch in enumerate(bar, start=first):
            result = step(batch, f'epoch {self.epoch + 1} step {i}', self.guard)
            if result is not None:
                loss, logits, target = result
                n = target.size(0)
                losses.update(loss.item(), n)
                top1.update(utils.accuracy(logits.detach(), target)[0], n)
                bar.set_postfix(loss=f'{losses.avg:.3f}', acc=f'{top1.avg:.1f}')
            if self.args.report_freq and i % self.args.report_freq == 0:
                logger.info('%s %03d loss %.4f top1 %.2f', desc, i, losses.avg, top1.avg)
            done = i + 1
            if distributed():
                # All ranks must stop at the same step, whichever of them got the signal.
                self._stop.agree(self._device)
            if done < total and (self._stop.signal or (every and done % every == 0)):
                self._save(self.epoch, done, [(losses.sum, losses.count), (top1.sum, top1.count)], self.guard.skipped)
                if self._stop.signal:
                    raise Preempted
        loss_sum, count, top1_sum = all_sum([losses.sum, losses.count, top1.sum], self._device)
        return loss_sum / max(count, 1), top1_sum / max(count, 1)


@torch.no_grad()
def evaluate(model, loader, criterion, device, desc='valid', no_progress=False):
    """Mean loss, top-1 and top-5 accuracy (percent) of `model` in eval mode."""
    model.eval()
    losses, top1, top5 = utils.AverageMeter(), utils.AverageMeter(), utils.AverageMeter()
    for x, y in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=no_progress or None):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        n = y.size(0)
        losses.update(criterion(logits, y).item(), n)
        acc1, acc5 = utils.accuracy(logits, y, topk=(1, 5))
        top1.update(acc1, n)
        top5.update(acc5, n)
    loss_sum, count, top1_sum, top5_sum = all_sum([losses.sum, losses.count, top1.sum, top5.sum], device)
    count = max(count, 1)
    return {'loss': loss_sum / count, 'top1': top1_sum / count, 'top5': top5_sum / count}


# What a learning-rate scheduler's state says about its position, as opposed to its schedule.
_SCHEDULE_POSITION = ('base_lrs', 'last_epoch', '_step_count', '_is_initial', '_get_lr_called_within_step', '_last_lr')


def _reschedule(scheduler, fresh):
    """After a resume loaded `scheduler`'s state: where `fresh` (the state of the scheduler the
    script built from this command's flags) has another schedule (--epochs, --learning_rate_min
    changed on resume), keep the checkpoint's position and take the new schedule, with the learning
    rate the new schedule has at that position (its closed form).  Returns whether it changed."""
    schedule = {key: value for key, value in fresh.items() if key not in _SCHEDULE_POSITION}
    if all(getattr(scheduler, key) == value for key, value in schedule.items()):
        return False
    scheduler.__dict__.update(schedule)
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler._get_closed_form_lr()):
        group['lr'] = lr
    scheduler._last_lr = [group['lr'] for group in scheduler.optimizer.param_groups]
    return True


def fit(run, args, stateful, run_epoch, loaders=(), device=None):
    """The epoch loop.  `stateful` maps names to objects with state_dict/load_state_dict (model,
    optimizers, scheduler, architect optimizer); `run_epoch(ctx)` trains and evaluates one epoch
    (through `ctx.train`) and returns its metrics; `loaders` are the DataLoaders whose generators
    are re-seeded from (--seed, epoch) so every epoch's data order can be replayed.

    A checkpoint with all state and every RNG state is written atomically after every epoch, every
    --checkpoint_steps steps, and on SIGTERM/SIGINT (then the run stops and returns preempted=True).
    `--resume` continues from it and replays exactly what an uninterrupted run would have done.
    An epoch whose metrics hold `early_stop` (the reason) ends the run there; a resume of it
    trains nothing more.  Returns (preempted, last epoch's metrics)."""
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    run.start()
    start, resume_point, checkpoint, stopped = 0, None, run.checkpoint, None
    if run.resume and checkpoint is None:
        logger.info('no checkpoint in %s yet (killed in the first epoch): starting from epoch 0', run.dir)
    elif run.resume:
        schedules = {name: obj.state_dict() for name, obj in stateful.items()
                     if isinstance(obj, torch.optim.lr_scheduler.LRScheduler)}
        for name, obj in stateful.items():
            obj.load_state_dict(checkpoint['state'][name])
        for name, schedule in schedules.items():
            if _reschedule(stateful[name], schedule):
                logger.info('%s: the learning rate follows the new schedule from epoch %d on: %s', name,
                            checkpoint['epoch'] + 1, ' '.join(f'{lr:.6g}' for lr in stateful[name].get_last_lr()))
        start, stopped = checkpoint['epoch'], checkpoint.get('early_stop')
        if stopped:
            logger.info('the run stopped early after epoch %d (%s): nothing to resume', start, stopped)
        if checkpoint.get('step'):
            resume_point = checkpoint
        else:
            utils.set_rng_state(checkpoint['rng'])
        logger.info('resumed %s: %d epochs done, %d steps of the next', run.dir, start, checkpoint.get('step', 0))
    if run.resume:
        for name in ('metrics.jsonl', 'alphas.jsonl'):
            run.truncate_jsonl(name, start)

    def save(epoch, step, meters=None, skipped=0, early_stop=None):
        if not is_main():
            return
        utils.atomic_torch_save({'epoch': epoch, 'step': step, 'meters': meters, 'skipped': skipped,
                                 **({'early_stop': early_stop} if early_stop else {}),
                                 'signature': run.signature, 'rng': utils.rng_state(),
                                 'state': {name: obj.state_dict() for name, obj in stateful.items()}},
                                run.path(CHECKPOINT))

    record = None
    with StopRequest() as stop:
        for epoch in range(start, start if stopped else args.epochs):
            for index, loader in enumerate(loaders):
                loader.generator.manual_seed(args.seed * 1_000_003 + epoch * 101 + index)
                if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
                    loader.sampler.seed = args.seed * 1_000_003 + index
                    loader.sampler.set_epoch(epoch)
            began = time.time()
            guard = NonFiniteGuard(args.skip_nonfinite)
            ctx = EpochContext(epoch, guard, args, save, stop, resume_point, device)
            resume_point = None
            try:
                record = {'epoch': epoch, **run_epoch(ctx)}
            except Preempted:
                logger.info('%s: checkpoint written in epoch %d; continue with --resume', stop.signal, epoch + 1)
                return True, record
            record['epoch_time'] = time.time() - began
            if guard.skipped:
                record['skipped_batches'] = guard.skipped
            run.append_jsonl('metrics.jsonl', record)
            run.tensorboard.log_scalars({k: v for k, v in record.items() if isinstance(v, (int, float))}, epoch)
            logger.info('epoch %d/%d %s', epoch + 1, args.epochs,
                        ' '.join(f'{k} {v:.4g}' for k, v in record.items() if isinstance(v, float)))
            save(epoch + 1, 0, early_stop=record.get('early_stop'))
            if record.get('early_stop'):
                logger.info('stopping early after epoch %d: %s', epoch + 1, record['early_stop'])
                break
            if stop.signal:
                logger.info('%s: checkpoint written after epoch %d; continue with --resume', stop.signal, epoch + 1)
                return True, record
    return False, record


def dataset_info(args, need_data=True):
    """datasets.dataset_info of --dataset at --image_size."""
    return datasets.dataset_info(args.dataset, args.data, image_size=args.image_size, need_data=need_data)


def load_split(args, train, augment=None):
    """The train or test split of --dataset as the script's flags prepare it: augmented (with
    Cutout under --cutout) when `augment` (default: for the train split), --image_size,
    --pipeline, --cifar_normalization."""
    augment = train if augment is None else augment
    return datasets.build_dataset(args.dataset, args.data, train=train, augment=augment,
                                  cutout_length=args.cutout_length if augment and args.cutout else 0,
                                  image_size=args.image_size, cifar_normalization=args.cifar_normalization,
                                  pipeline=args.pipeline)


def device_augmentation(args, augment):
    """`make_loader`'s on_device under --data_on_device (else None): the augmentation of load_split."""
    if not args.data_on_device:
        return None
    return dict(name=args.dataset, augment=augment, cutout_length=args.cutout_length if augment and args.cutout else 0,
                cifar_normalization=args.cifar_normalization)


def make_loader(dataset, batch_size, shuffle, workers, device, drop_last=False, on_device=None):
    """A DataLoader with its own generator, which `fit` re-seeds every epoch; under torchrun each
    process reads its own shard (batch_size is per process).  `on_device` (device_augmentation),
    given with --data_on_device, holds the split on `device` and augments it there
    (datasets.DeviceLoader) instead."""
    if on_device is not None:
        return datasets.DeviceLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                     device=device, **on_device)
    sampler = (torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, drop_last=drop_last)
               if distributed() else None)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, drop_last=drop_last, pin_memory=device.type == 'cuda', generator=torch.Generator())
