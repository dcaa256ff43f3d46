"""Running the project's scripts from tests, as a researcher runs them.

Each script runs in a process of its own, forked from tests/script_server.py, which has imported
torch and torchvision once (seconds of CPU a process)."""
import atexit
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600


class _Server:
    """This test process's fork server, started on first use."""
    process = None
    path = None

    @classmethod
    def address(cls):
        if cls.process is None or cls.process.poll() is not None:
            cls.path = os.path.join(tempfile.mkdtemp(prefix='script-server-'), 'socket')
            cls.process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'script_server.py'), cls.path],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if cls.process.stdout.readline().strip() != 'ready':
                raise RuntimeError('tests/script_server.py did not start')
            atexit.register(cls.process.stdin.close)
        return cls.path


class Script:
    """A started script, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, script, args, cwd=ROOT, capture=False):
        if not os.path.isdir(cwd):  # as Popen: the caller hears of it, not the script's stderr
            raise FileNotFoundError(f'no such directory: {cwd}')
        self._streams = tempfile.mkdtemp(prefix='script-streams-') if capture else None
        paths = [os.path.join(self._streams, name) if capture else None for name in ('stdout', 'stderr')]
        self.returncode = None
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._connection.connect(_Server.address())
        request = {'script': str(script), 'args': list(map(str, args)), 'cwd': str(cwd), 'env': dict(os.environ),
                   'stdout': paths[0], 'stderr': paths[1]}
        self._connection.sendall((json.dumps(request) + '\n').encode())
        self._received = b''
        self.pid = int(self._reply(None))

    def _reply(self, timeout):
        """The server's next line; None if it has not come within `timeout` seconds (None: wait)."""
        while b'\n' not in self._received:
            if timeout is not None and not select.select([self._connection], [], [], timeout)[0]:
                return None
            chunk = self._connection.recv(64)
            if not chunk:
                raise RuntimeError(f'the script server lost {self.pid}')
            self._received += chunk
        line, _, self._received = self._received.partition(b'\n')
        return line

    def poll(self):
        return self._wait(0)

    def wait(self, timeout=None):
        if self._wait(timeout) is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.returncode

    def _wait(self, timeout):
        if self.returncode is None:
            line = self._reply(timeout)
            if line is not None:
                self.returncode = int(line)
                self._connection.close()
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def output(self, name):
        """What the script wrote to 'stdout' or 'stderr' (when started with `capture`)."""
        with open(os.path.join(self._streams, name), errors='replace') as f:
            return f.read()

    def communicate(self, timeout=None):
        """Wait, then (stdout, stderr), as Popen.communicate with both streams piped."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        streams = self.output('stdout'), self.output('stderr')
        shutil.rmtree(self._streams)
        return streams


def start(script, *args, cwd=ROOT, capture=False):
    """Start `python script args...` in `cwd` and return at once."""
    return Script(script, args, cwd, capture)


def run(script, *args, check=True, cwd=ROOT):
    """Run `python script args...` (in the repository root); with `check`, fail on a non-zero exit."""
    process = start(script, *args, cwd=cwd, capture=True)
    stdout, stderr = process.communicate(TIMEOUT_S)
    result = subprocess.CompletedProcess([script, *map(str, args)], process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f'{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    return result


def kill_when(script, args, save, condition, delay=0.0):
    """Start `script`, SIGKILL it `delay` seconds after `condition()` holds (polled every 20 ms)."""
    process = start(script, *args, '--save', save)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and not condition():
        time.sleep(0.02)
    time.sleep(delay)
    process.kill()
    process.wait()


def kill_and_resume(script, args, save, seed, kills):
    """Start `script` into `save`, SIGKILL it at a random moment after its first checkpoint, then
    `kills` times resume it and kill it again at random, and finally resume it to the end: every
    kill lands inside an epoch, between steps or while a checkpoint is written."""
    rng = random.Random(seed)
    kill_when(script, args, save, lambda: (save / 'checkpoint.pt').exists(), rng.uniform(0, 1.5))
    for _ in range(kills):
        kill_when(script, [*args, '--resume'], save, lambda: True, rng.uniform(1.0, 4.0))
    run(script, *args, '--save', save, '--resume')


def top1_range(model_path, dataset, data):
    """The top-1 accuracies (percent, lowest and highest) that an evaluation of a trained.pt on the
    test split can report, from an evaluation here in float64.

    The scripts evaluate in float32, some in another memory layout or batching (different kernels,
    different rounding), so a sample whose largest logits are within rounding of each other may be
    classified either way.  Rounding moves float32 logits by ~1e-6 of their magnitude; classes
    within 1e-3 * max(1, |largest logit|) of the largest float64 logit count as possible
    predictions.  Without such near-ties the range is one value, which every correct evaluation
    reports."""
    import torch

    import datasets
    import evaluation
    model = evaluation.load_trained(model_path)[0].double().eval()
    test = datasets.build_dataset(dataset, data, train=False, augment=False)
    sure = possible = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=64):
            out = model(x.double())
            logits = out[0] if isinstance(out, tuple) else out
            top = logits.amax(1, keepdim=True)
            candidates = logits >= top - 1e-3 * top.abs().clamp(min=1)
            right = candidates[torch.arange(len(y)), y]
            sure += int((right & (candidates.sum(1) == 1)).sum())
            possible += int(right.sum())
    return 100 * sure / len(test), 100 * possible / len(test)


def assert_top1_in(reported, bounds):
    """`reported` (a float32 evaluation's mean of per-batch percentages) lies in `top1_range`'s bounds."""
    low, high = bounds
    assert low - 1e-4 <= reported <= high + 1e-4, (reported, bounds)
