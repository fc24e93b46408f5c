"""Files written whole or not at all: a temporary file beside the target, renamed into place."""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(*targets, mode=0o644):
    """Yield one temporary path per target; on success rename them all into place, else remove them.

    A reader never sees half a file, and a failure leaves no `*.partial` behind. Several targets are
    renamed only once every one of them is complete (all or nothing, as far as renames go).
    """
    temps = []
    try:
        for target in map(Path, targets):
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
            os.close(fd)
            temps.append(tmp)
        yield [Path(t) for t in temps]
        for tmp, target in zip(temps, targets):
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_atomic(path, data, mode=0o644):
    """Write bytes or text to `path` whole or not at all."""
    with replacing(path, mode=mode) as (tmp,):
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
