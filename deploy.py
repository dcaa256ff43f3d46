"""Deployment of trained networks: a trained.pt of any family as a network, that network as an
ONNX model (torch.onnx), and the model run in ONNX Runtime.

Any family's trained.pt: the DARTS, Att-DARTS, CNAS and NAG cell networks and the ANAS ResNets of
train_CIFAR10.py / train_CIFAR100.py / train_ImageNet.py / train_net.py (read by
`evaluation.load_trained`, as the test scripts read them) and the SLNAS networks of
retrain_slnas.py.  A network is exported in eval mode (BatchNorm running statistics, no drop
path, no auxiliary head) with torch.onnx's default exporter, the torch.export-based one of
PyTorch 2.9 and later (https://docs.pytorch.org/docs/stable/onnx_export.html), as a graph from an
image batch `input` (N, C, H, W) to `logits` (N, classes) whose batch axis N is dynamic.  ONNX
Runtime (https://onnxruntime.ai) runs it on its CPU provider.  `export.py` is the script;
`latency.py` times candidates through the same export and session.
"""
import os
import warnings

import numpy as np
import torch
import torch.nn as nn

import datasets
import evaluation
import genotypes
import slnas
import utils
from utils import UserError

INPUT_NAME, OUTPUT_NAME = 'input', 'logits'


class Logits(nn.Module):
    """A network whose forward returns (logits, auxiliary outputs), as the evaluation networks
    do, seen as one returning the logits alone (a plain tensor passes through)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, input):
        out = self.network(input)
        return out[0] if isinstance(out, (tuple, list)) else out


def load_network(path):
    """(network in eval mode, input shape (C, H, W), ONNX metadata) of a trained.pt of any family."""
    checkpoint = utils.load_checkpoint_file(path, 'model file')
    record = checkpoint.get('network') if isinstance(checkpoint, dict) else None
    run_args = checkpoint.get('args', {}) if isinstance(checkpoint, dict) else {}
    if isinstance(record, dict) and 'genotype' in checkpoint:
        model, config, genotype, run_args = evaluation.load_trained(path)
        shape = (config['in_channels'], config['image_size'], config['image_size'])
        architecture = genotypes.to_dict(genotype) if genotype is not None else config.get('attention')
    elif isinstance(record, dict) and {'arch', 'stride4', 'blurpool_stem'} <= record.keys():
        arch = genotypes.seq_from_dict(record['arch'], path)
        model = slnas.Network(record['C'], arch.blocks, record['classes'], arch=arch, stride4_stem=record['stride4'],
                              blurpool_stem=record['blurpool_stem'])
        try:
            model.load_state_dict(checkpoint['state_dict'])
        except RuntimeError as exc:
            raise UserError(f"{path}: weights do not fit the recorded SLNAS network ({str(exc).splitlines()[0]})") \
                from exc
        info = datasets.dataset_info(run_args.get('dataset', 'cifar10'), run_args.get('data'),
                                     image_size=run_args.get('image_size'), need_data=False)
        shape, architecture = (info.in_channels, info.image_size, info.image_size), record['arch']
    else:
        raise UserError(f"{path} is not a trained.pt of a train script (train_*.py, train_net.py, retrain_slnas.py); "
                        f"pass the trained.pt of a finished training run")
    metadata = {'source': os.path.basename(path), 'architecture': str(architecture),
                'dataset': str(run_args.get('dataset', '')), 'input_shape': 'N,' + ','.join(map(str, shape)),
                'cifar_normalization': str(run_args.get('cifar_normalization', '')),
                'pipeline': str(run_args.get('pipeline', ''))}
    return model.eval(), shape, metadata


def to_onnx(module, example, metadata=None):
    """The ONNX model (serialised bytes) of `module` in eval mode on the example input, its batch
    axis dynamic; a module that cannot be exported is one UserError line naming the exporter's
    reason."""
    wrapped = Logits(module).eval()
    batch = torch.export.Dim('batch', min=1)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')
            program = torch.onnx.export(wrapped, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={INPUT_NAME: {0: batch}}, dynamo=True, verbose=False)
    except Exception as exc:  # torch.export and the ONNX translation raise many types
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"cannot export {type(module).__name__} to ONNX: {reason[:300]}") from exc
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def onnx_session(model_bytes, threads=1):
    """An ONNX Runtime CPU session of a serialised model, with `threads` intra-op threads."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model_bytes, options, providers=['CPUExecutionProvider'])


def max_difference(model_bytes, module, x):
    """The largest absolute difference between ONNX Runtime's and PyTorch's outputs on x."""
    expected = Logits(module).eval()
    with torch.no_grad():
        reference = expected(x).numpy()
    output = onnx_session(model_bytes).run(None, {INPUT_NAME: x.numpy()})[0]
    if output.shape != reference.shape:
        return float('inf')
    return float(np.abs(output.astype(np.float64) - reference.astype(np.float64)).max())
