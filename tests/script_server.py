"""A fork server that starts the project's scripts for the tests without paying for `import torch`.

Importing torch and torchvision takes seconds of CPU, and the suite starts over a hundred script
processes.  This server imports the third-party libraries once; for each request it forks, and the
child runs the script as `python script args...` would: a process of its own, `__main__`, its own
argv, working directory, environment and standard streams, and its exit status.  The project's own
modules are not pre-imported, so each script still imports them itself.

Protocol (one Unix-socket connection per script): the client sends one JSON line
{script, args, cwd, env, stdout, stderr} (the two streams: file paths, or null for /dev/null); the
server answers with the script's pid, then with its return code (negative: killed by that signal).
"""
import atexit
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback

import numpy  # noqa: F401  (the heavy imports every script shares)
import PIL.Image  # noqa: F401
import torch  # noqa: F401
import torch.distributed  # noqa: F401
import torch.utils.flop_counter  # noqa: F401
import torchvision  # noqa: F401
import tqdm  # noqa: F401


def _exit_code(exit):
    """What the interpreter makes of `sys.exit(code)`."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)
    return 1


def _redirect(fd, path, flags):
    target = os.open(path, flags | os.O_CREAT, 0o644) if path else os.open(os.devnull, flags)
    os.dup2(target, fd)
    os.close(target)


def _run_script(request):
    """In the forked child: become `python script args...` and never return."""
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    _redirect(0, None, os.O_RDONLY)
    _redirect(1, request['stdout'], os.O_WRONLY | os.O_TRUNC)
    _redirect(2, request['stderr'], os.O_WRONLY | os.O_TRUNC)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, 'w', closefd=False)
    sys.stderr = open(2, 'w', buffering=1, errors='backslashreplace', closefd=False)
    script = request['script']
    sys.argv = [script, *request['args']]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    if not os.path.isfile(script):
        print(f"{sys.executable}: can't open file {os.path.abspath(script)!r}: [Errno 2] No such file or directory",
              file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    try:
        runpy.run_path(script, run_name='__main__')
        code = 0
    except SystemExit as exit:
        code = _exit_code(exit)
    except BaseException as error:  # noqa: B036  (the interpreter prints any uncaught exception and exits 1)
        frames = error.__traceback__
        while frames is not None and frames.tb_frame.f_code.co_filename != script:  # from the script's frame on
            frames = frames.tb_next
        traceback.print_exception(type(error), error, frames)
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _handle(connection):
    """In a forked runner: start the script, report its pid, wait, report its return code."""
    line = connection.makefile('r').readline()
    if not line:  # the client went away before asking
        return
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        connection.close()
        try:
            _run_script(request)
        finally:  # a failure before the script started must not return into this runner
            os._exit(1)
    connection.sendall(f'{pid}\n'.encode())
    _, status = os.waitpid(pid, 0)
    connection.sendall(f'{os.waitstatus_to_exitcode(status)}\n'.encode())


def serve(path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the runners reap their scripts; nobody waits on runners
    print('ready', flush=True)
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in readable:  # the test process closed our stdin: it is gone
            os.remove(path)
            os.rmdir(os.path.dirname(path))
            return
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _handle(connection)
            finally:  # never back into the accept loop: there is one server
                os._exit(0)
        connection.close()


if __name__ == '__main__':
    serve(sys.argv[1])
