"""Atomic file and folder writes: readers see all or nothing.

An export writes its version into a hidden `.tmp-<version>-<pid>` folder
beside the target and renames it when complete (`os.rename` of a folder is
atomic on one file system). TF Serving only loads integer-named version
folders, so it never sees the temp folder. The pid in the name lets the
next export tell a dead writer's leftovers (removed) from a running
export's folder (kept, and its version counted as taken).
"""

import contextlib
import dataclasses
import errno
import os
import shutil
import tempfile

from keras_mm.errors import ExportError

TEMP_PREFIX = ".tmp-"


def name_path(error, path):
    """`error` (an OSError) as one that names `path` and what to do.

    Writers deep in zipfile / h5py raise `[Errno 28] No space left on
    device` without a file name; the caller knows which file it was
    writing.
    """
    path = os.fspath(path)
    if not isinstance(error, OSError) or (
            error.filename is not None and
            os.path.abspath(os.fspath(error.filename)) ==
            os.path.abspath(path)):
        return error
    hint = ""
    if error.errno == errno.ENOSPC:
        hint = "; free space on that disk (or write elsewhere) and run again"
    elif error.errno == errno.EDQUOT:
        hint = "; the disk quota is exceeded"
    reason = error.strerror or str(error)
    return type(error)(error.errno, f"{reason} while writing {path}{hint}",
                       path)


@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path beside `path`; renamed onto `path` when the
    block ends without an error, removed otherwise (readers see the old
    file or the whole new one, never a truncated one).

    The temporary name keeps `path`'s suffix (`.tmp-<pid>-best.keras`), so
    writers that check the extension (Keras) accept it. OSErrors (a full
    disk) name `path`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-"
                               f"{os.path.basename(path)}")
    try:
        os.makedirs(folder, exist_ok=True)
        yield tmp
        with contextlib.suppress(OSError):
            _fsync(tmp)
        os.replace(tmp, path)
        fsync_dir(folder)
    except OSError as error:
        _remove(tmp)
        raise name_path(error, path) from error
    except BaseException:
        _remove(tmp)
        raise


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def atomic_save_model(model, path):
    """`model.save(path)` through a temporary file and a rename: a crash or
    a full disk never leaves a truncated `.keras` file at `path`."""
    with atomic_file(path) as tmp:
        model.save(tmp)
    return path


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file and a rename.

    The file gets the mode `open()` would give it (0666 less the umask),
    not `mkstemp`'s 0600: TF Serving, TensorBoard or another user may have
    to read it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX,
                               suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise name_path(error, path) from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_temp_name(entry):
    """`(label, pid)` of a `.tmp-<label>-<pid>` folder name, else None."""
    if not entry.startswith(TEMP_PREFIX):
        return None
    label, _, pid = entry[len(TEMP_PREFIX):].rpartition("-")
    if not label or not pid.isdigit():
        return None
    return label, int(pid)


def remove_stale_temp_dirs(parent):
    """Deletes `.tmp-<label>-<pid>` entries whose writing process has died.

    Returns the removed names.
    """
    if not os.path.isdir(parent):
        return []
    removed = []
    for entry in sorted(os.listdir(parent)):
        parsed = _parse_temp_name(entry)
        if parsed is None or _pid_alive(parsed[1]):
            continue
        path = os.path.join(parent, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(entry)
    return removed


def live_temp_labels(parent):
    """Integer labels (versions) of temp folders of running exports."""
    labels = []
    if not os.path.isdir(parent):
        return labels
    for entry in os.listdir(parent):
        parsed = _parse_temp_name(entry)
        if parsed and parsed[0].isdigit() and _pid_alive(parsed[1]):
            labels.append(int(parsed[0]))
    return labels


def temp_dir_for(parent, label):
    """A fresh hidden temp folder inside `parent`, tagged with our pid."""
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f"{TEMP_PREFIX}{label}-{os.getpid()}")
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def _fsync(path):
    """Flushes one file's (or folder's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    """Flushes a folder's entries (names) to disk."""
    with contextlib.suppress(OSError):
        _fsync(path)


def fsync_tree(root):
    """Flushes every file and folder under `root` to disk, so that the
    rename that publishes it never exposes unwritten data after a crash."""
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                _fsync(os.path.join(folder, name))
        fsync_dir(folder)


def next_version(model_dir):
    """The next free integer version in `model_dir` (1 when empty).

    Versions held by the temp folder of a running export count as taken.
    """
    if not os.path.isdir(model_dir):
        return 1
    taken = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    taken += live_temp_labels(model_dir)
    return max(taken, default=0) + 1


@dataclasses.dataclass(frozen=True)
class Publication:
    """A version being written: `folder` (the hidden temp folder to write
    into), `final` (the integer-named folder it becomes) and `version`."""

    version: int
    folder: str
    final: str


@contextlib.contextmanager
def publish_version(model_dir, version=None):
    """Yields a `Publication` for `<model_dir>/<version>/`; the block writes
    the version into `publication.folder`.

    Before: dead writers' temp folders are removed, `version` (None: the
    next free one) is checked to be free (versions are immutable). When the
    block ends without an error, the folder is flushed to disk and renamed
    onto `final` in one step; on any error it is removed, so TF Serving or
    a user never sees a partial version.
    """
    model_dir = os.fspath(model_dir)
    if version is not None and (not str(version).isdigit()
                                or int(version) < 1):
        raise ExportError(f"version={version!r}: give a positive integer, "
                          "or None for the next free one")
    remove_stale_temp_dirs(model_dir)
    version = int(version) if version is not None \
        else next_version(model_dir)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ExportError(
            f"{final} already exists; versions are immutable: omit "
            "`version` to take the next free one")
    folder = temp_dir_for(model_dir, str(version))
    try:
        yield Publication(version, folder, final)
        fsync_tree(folder)
        try:
            os.rename(folder, final)
        except OSError as e:
            raise ExportError(
                f"could not publish {final} ({e.strerror}); another export "
                "took this version meanwhile: export again") from None
        fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
