"""TensorBoard for a run: scalars, weight histograms and cell images, written next to metrics.jsonl
(which stays the record) when tensorboard is installed, and nothing otherwise."""
import io
import os

from drawing import dot_available, genotype_to_dot
from plots import finite_number

class TensorBoardLogger:
    """TensorBoard scalars, weight histograms and cell images in run_dir; a no-op (`enabled` False)
    when tensorboard is not installed.  metrics.jsonl stays the record; this is only a viewer."""

    def __init__(self, run_dir):
        """run_dir None: a disabled logger (processes other than rank 0 of a torchrun job)."""
        self.writer = None
        if run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # ImportError, or a broken tensorboard/protobuf install
            return
        self.writer = SummaryWriter(log_dir=os.path.join(run_dir, 'tensorboard'))

    @property
    def enabled(self):
        return self.writer is not None

    def log_scalars(self, scalars, step):
        if not self.enabled:
            return
        for key, value in scalars.items():
            if finite_number(value):
                self.writer.add_scalar(key, value, step)

    def log_weights(self, tables, step):
        """tables: {name: array-like} or the alphas.jsonl form {name: {'candidates', 'values'}}."""
        if not self.enabled:
            return
        import numpy as np
        for name, values in tables.items():
            if isinstance(values, dict):
                values = values.get('values', [])
            if hasattr(values, 'detach'):
                values = values.detach().cpu().numpy()
            values = np.asarray(values, dtype=float)
            if values.size:
                self.writer.add_histogram(name, values, step)

    def log_genotype(self, genotype, step):
        if not self.enabled or not dot_available():
            return
        from matplotlib.image import imread
        for cell in ('normal', 'reduce'):
            try:
                data = genotype_to_dot(genotype, cell).pipe(format='png')
            except Exception:  # a drawing is not worth failing a run for
                continue
            self.writer.add_image(f'cell/{cell}', imread(io.BytesIO(data), format='png'), step,
                                  dataformats='HWC')

    def close(self):
        if self.enabled:
            self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
