"""Running the project's scripts from tests, as a researcher runs them."""
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, check=True):
    """Run `python script args...` in the repository root; with `check`, fail on a non-zero exit."""
    result = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f'{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    return result


def kill_when(script, args, save, condition, delay=0.0):
    """Start `script`, SIGKILL it `delay` seconds after `condition()` holds (polled every 20 ms)."""
    proc = subprocess.Popen([sys.executable, script, *map(str, args), '--save', str(save)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not condition():
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
