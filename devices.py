"""Where and how a network runs: the device (--device), distributed data parallelism under torchrun,
mixed precision (--amp) and the network's placement (--kernels, --channels_last, --compile)."""
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import kernels
from utils import UserError

AMP_DTYPES = ('auto', 'float16', 'bfloat16')


def distributed():
    return dist.is_available() and dist.is_initialized()


def is_main():
    """Rank 0 of a torchrun job, or a single process: the one that writes the run directory."""
    return not distributed() or dist.get_rank() == 0


def init_distributed():
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    if int(os.environ.get('WORLD_SIZE', '1')) > 1 and not distributed():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')



def leave_process_group():
    """Close the torchrun process group at the end of a script (nothing in a single process)."""
    if distributed():
        dist.destroy_process_group()


def all_sum(values, device):
    """Sum a list of numbers over all processes (identity in a single process)."""
    if not distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def single_process():
    """For scripts whose steps differ per process (sampled sub-networks, GAN), which DDP cannot average."""
    if distributed():
        script = os.path.basename(sys.argv[0])
        raise UserError(f"{script} runs in one process; start it with python, not torchrun")


def wrap_distributed(model, device):
    """DistributedDataParallel around `model` under torchrun (it averages the weight gradients)."""
    if not distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)


def select_device(name):
    """`--device`: 'auto' takes the visible GPU with the most free memory (as CNAS does, so that
    runs started one after another on a shared machine spread out), or the CPU without one.
    Under torchrun each process takes the GPU of its LOCAL_RANK.  On a GPU, cuDNN times its
    algorithms for each convolution shape (cudnn.benchmark, as the DARTS reference code sets it;
    `fit` turns it off again for --deterministic)."""
    device = _device(name)
    if device.type == 'cuda':
        if device.index is not None:
            torch.cuda.set_device(device)  # so that anything created on plain 'cuda' lands there too
        torch.backends.cudnn.benchmark = True
    return device


def _device(name):
    init_distributed()
    if distributed() and name == 'auto' and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    if name == 'auto':
        if not torch.cuda.is_available():
            return torch.device('cpu')
        count = torch.cuda.device_count()
        if count == 1:
            return torch.device('cuda', 0)
        # mem_get_info opens a context on each GPU it asks; with one GPU there is nothing to choose.
        return torch.device('cuda', max(range(count), key=lambda i: torch.cuda.mem_get_info(i)[0]))
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but no GPU is visible; use --device cpu")
    return device


def place_model(model, args, device, compiled=True):
    """`model` in the implementation of --kernels, on `device` in the layout of --channels_last,
    compiled with --compile where `compiled`.  Only the weights are converted: a convolution gives
    its output the layout of its weight, so the feature maps are channels-last from the stem on,
    whatever layout the loader delivers."""
    kernels.apply(model, args.kernels, device)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    if args.compile and compiled:
        model.compile()
    return model


def amp_dtype(args, device):
    """--amp_dtype; 'auto': float16 (with loss scaling) on a GPU, bfloat16 on the CPU, where float16
    kernels are slow or missing."""
    if args.amp_dtype != 'auto':
        return getattr(torch, args.amp_dtype)
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def autocast(args, device):
    return torch.autocast(device.type, dtype=amp_dtype(args, device), enabled=args.amp)


def grad_scaler(args, device):
    """Loss scaling for float16; a pass-through otherwise.  Checkpointed with the optimizer."""
    return torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype(args, device) == torch.float16)
