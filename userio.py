"""What scripts share with their user without needing torch: the error that names a mistake, and
atomic file writes.  Apart from utils.py so that the architecture records (genotypes.py,
nag_cells.py) load without torch."""
import json
import os
import tempfile


class UserError(Exception):
    """A mistake in the user's input; scripts print `error: <message>` and exit with code 2."""


def atomic_write(path, write_fn, mode='wb'):
    """Write `path` through `write_fn(file)` into a temporary file in the same directory, fsync it
    and rename it over `path`, so a crash leaves either the old file or the new one, never half."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs should be as readable as any file
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text), mode='w')


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


def make_readable(path):
    """Make a written output (a figure, a drawing, a report) world-readable whatever the umask; returns `path`."""
    os.chmod(path, 0o644)
    return path
