"""train_search.py under torchrun, with the losses of the training-mode criterion calls listed in
NAN_CALLS (1-based, comma-separated) made NaN on rank 1 only, for tests/test_distributed.py."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import train_search  # noqa: E402

NAN_CALLS = {int(n) for n in os.environ['NAN_CALLS'].split(',')}
calls = 0
cross_entropy = torch.nn.CrossEntropyLoss.forward


def poisoned(self, logits, target):
    global calls
    loss = cross_entropy(self, logits, target)
    if not torch.is_grad_enabled():  # evaluation
        return loss
    calls += 1
    return loss * float('nan') if os.environ['RANK'] == '1' and calls in NAN_CALLS else loss


torch.nn.CrossEntropyLoss.forward = poisoned

if __name__ == '__main__':
    sys.exit(train_search.main())
