"""Fast kernels: the same networks computed with hand-written backward passes, shared inputs and
edge batching, for speed and memory.

The plain modules (`operations.py`, `attention.py`, `model_search.py`, `anas.py`, `model.py`) define the
networks and never import this package.  `accelerate(model)` turns a plain network into the fast
one in place, before its first forward: every module whose type has a fast form here gets that
form's class, a subclass with the same parameters and buffers (so checkpoints, parameter counts
and optimizers are unchanged) that computes the same function with other rounding.  Modules of
other types (a new attention, a new op) keep their plain `forward`.

`--kernels` on every script picks the implementation at construction time (`apply`):
    plain   the plain modules;
    fast    the fast kernels;
    auto    the fast kernels on the device types where they were measured faster than plain
            (`MEASURED_FASTER`; docs/benchmarks.md), plain elsewhere.

A candidate opts into the fast mixture of a search edge (kernels/mixture.py) through:
    * subclassing `attention.ChannelGate` (forward(x) = x * channel_scale(x)): mixed as
      x * sum_k w_k channel_scale_k(x), with no output kept;
    * a `weighted(x, w)` method returning w * forward(x) (w a 0-d tensor or None);
    * the edge-batched static methods documented in kernels/attention_kernels.py;
and a fast class registers with `register(PlainClass, FastClass)`.
"""
from copy import deepcopy

import torch.nn as nn

# The fast forms register themselves where they are defined (registry.FAST_KERNELS).
from kernels import attention_kernels, convolution, mixture  # noqa: F401
from kernels.layout import GlobalAveragePool
from registry import FAST_KERNELS

CHOICES = ('auto', 'fast', 'plain')
# Device types on which `bench.py --kernels fast` beat `--kernels plain` (docs/benchmarks.md).
MEASURED_FASTER = ('cpu',)


def register(plain_class, fast_class):
    """Give `plain_class` a fast form (registry.FAST_KERNELS): a subclass adding no parameters or buffers."""
    if not issubclass(fast_class, plain_class):
        raise TypeError(f"{fast_class.__name__} must subclass {plain_class.__name__}")
    FAST_KERNELS.register(plain_class, fast_class)


def _fast_form(module):
    if isinstance(module, nn.AdaptiveAvgPool2d) and type(module) is nn.AdaptiveAvgPool2d:
        return GlobalAveragePool if module.output_size in (1, (1, 1)) else None
    if isinstance(module, nn.MaxPool2d) and (module.dilation not in (1, (1, 1)) or module.return_indices):
        return None
    return FAST_KERNELS[type(module)] if type(module) in FAST_KERNELS else None


def accelerate(model):
    """`model` with every module that has a fast form switched to it, in place; returns `model`."""
    for module in model.modules():
        fast = _fast_form(module)
        if fast is not None:
            module.__class__ = fast
            if hasattr(fast, 'accelerate'):
                module.accelerate()
    return model


def plain_copy(model):
    """A copy of `model` in the plain implementation (same parameters and buffers, copied)."""
    plain_forms = {fast: plain for plain, fast in FAST_KERNELS.items()}
    plain_forms.update({GlobalAveragePool: nn.AdaptiveAvgPool2d, convolution.PolyphaseDilatedConv: nn.Conv2d})
    copy = deepcopy(model)
    for module in copy.modules():
        if type(module) in plain_forms:
            module.__class__ = plain_forms[type(module)]
    return copy


def is_accelerated(model):
    fast_forms = {fast for _, fast in FAST_KERNELS.items()}
    return any(type(module) in fast_forms for module in model.modules())


def resolve(choice, device):
    """'fast' or 'plain' for a `--kernels` choice on `device` (a torch.device or a type string)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown kernels '{choice}'; choose from {', '.join(CHOICES)}")
    if choice != 'auto':
        return choice
    device_type = getattr(device, 'type', device)
    return 'fast' if device_type in MEASURED_FASTER else 'plain'


def apply(model, choice, device):
    """`model` in the implementation that `--kernels choice` picks on `device`."""
    return accelerate(model) if resolve(choice, device) == 'fast' else model
