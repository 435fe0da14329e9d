"""Atomic file and folder writes: readers see all or nothing."""

import contextlib
import os
import shutil
import tempfile


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                               suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_dirs(parent):
    """Deletes `.tmp-*-<pid>` folders whose writing process has died."""
    if not os.path.isdir(parent):
        return []
    removed = []
    for entry in os.listdir(parent):
        if not entry.startswith(".tmp-"):
            continue
        try:
            pid = int(entry.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            removed.append(entry)
    return removed


def temp_dir_for(parent, label):
    """A fresh hidden temp folder inside `parent`, tagged with our pid.

    TF Serving only loads integer-named version folders, so `.tmp-*`
    folders are invisible to it.
    """
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".tmp-{label}-{os.getpid()}")
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path
