"""The fork server the tests start scripts with behaves as a fresh `python script.py`."""
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import run, start

PROBE = textwrap.dedent('''
    import atexit, os, sys
    atexit.register(lambda: print('atexit ran'))
    print(__name__, sys.argv, sys.path[0], os.getcwd(), os.environ.get('PROBE_VALUE'))
    print('a line on stderr', file=sys.stderr)
    print(sys.stdin.read() == '')
    outcome = sys.argv[1]
    if outcome == 'raise':
        raise ValueError('probe failure')
    if outcome == 'sleep':
        import time
        time.sleep(60)
    sys.exit(int(outcome) if outcome.isdigit() else outcome)
''')


@pytest.fixture
def probe(tmp_path, monkeypatch):
    path = tmp_path / 'probe.py'
    path.write_text(PROBE)
    monkeypatch.setenv('PROBE_VALUE', 'set after the server started')
    run(path, '0', cwd=tmp_path)  # the server exists before the variable below changes
    monkeypatch.setenv('PROBE_VALUE', 'changed since')
    return path


@pytest.mark.parametrize('outcome', ['0', '3', 'a message instead of a code', 'raise'])
def test_script_sees_what_a_fresh_interpreter_sees(probe, tmp_path, outcome):
    served = run(probe, outcome, cwd=tmp_path, check=False)
    fresh = subprocess.run([sys.executable, str(probe), outcome], cwd=tmp_path, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
    assert served.returncode == fresh.returncode
    assert served.stdout == fresh.stdout and 'changed since' in served.stdout and 'atexit ran' in served.stdout
    assert served.stderr.replace(str(probe), 'P') == fresh.stderr.replace(str(probe), 'P')


def test_missing_script_or_directory_is_reported_as_python_and_popen_do(tmp_path):
    served = run(tmp_path / 'missing.py', check=False, cwd=tmp_path)
    fresh = subprocess.run([sys.executable, str(tmp_path / 'missing.py')], cwd=tmp_path, capture_output=True, text=True)
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert served.returncode == 2
    with pytest.raises(FileNotFoundError):
        run('train_search.py', cwd=tmp_path / 'nowhere')


def test_killed_script_reports_the_signal(probe, tmp_path):
    process = start(probe, 'sleep', cwd=tmp_path)
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL
    with pytest.raises(subprocess.TimeoutExpired):
        start(probe, 'sleep', cwd=tmp_path).wait(0.5)
