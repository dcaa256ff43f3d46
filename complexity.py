"""Size and cost of a network: parameters and forward FLOPs per image (torch.utils.flop_counter)."""
import torch
from torch.utils.flop_counter import FlopCounterMode

import kernels
import utils


def count_flops(model, input_shape, batch=1):
    """Forward FLOPs of one image (torch.utils.flop_counter), in eval mode, counted on a batch of
    `batch` images: a network whose BatchNorms use batch statistics even in eval mode (SLNAS's
    supernet) needs two, and the counted convolutions and products scale exactly with the batch."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, *input_shape, device=param.device, dtype=param.dtype))
        return counter.get_total_flops() // batch
    finally:
        model.train(was_training)


def describe(model, input_shape, batch=1):
    """(parameters in M, FLOPs per image, a description).  The FLOPs are the plain network's: a fast
    kernel may compute the same function with other operations."""
    params = utils.count_parameters_in_MB(model)
    accelerated = kernels.is_accelerated(model)
    flops = count_flops(kernels.plain_copy(model) if accelerated else model, input_shape, batch)
    implementation = 'fast' if accelerated else 'plain'
    return params, flops, (f'params: {params:.6f} M\nflops: {flops / 1e6:.2f} MFLOPs per image\n'
                           f'kernels: {implementation}')
