"""The tests work on tiny tensors, where a second OpenMP thread only adds overhead, and on a shared
machine its spin-waits make a tiny depthwise conv orders of magnitude slower.  One thread here, and
through the environment for the scripts the tests start."""
import os

os.environ['OMP_NUM_THREADS'] = '1'

import torch  # noqa: E402  (after the environment is set, for the subprocesses' sake)

torch.set_num_threads(1)
