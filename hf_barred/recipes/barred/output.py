"""The output folder of a run: checked before anything is written, locked while the run writes it.

:func:`locked_output` is what a recipe's run loop enters first:

- it refuses an ``--output`` that is a file, or a folder that cannot be created or written
  (:class:`OutputFolderError`, a ``ValueError``: the CLI prints one line and exits 2);
- it refuses a folder that holds a ``README.md`` but is not a hf_barred output (no
  ``summary.json`` / ``augment_stats.json``), unless ``overwrite=True`` (``--overwrite``), so a
  user's own README is never replaced by a dataset card;
- it takes an exclusive :class:`filelock.FileLock` on ``DIR/.barred.lock`` and writes the holder's
  PID to ``DIR/.barred.pid``: a second run into the same folder fails at once, naming that PID;
- when the run fails, what it created and left empty (``work/``, the folder itself) is removed.

The lock file itself stays after a run: deleting it while another process waits on it would let
two runs hold two different locks.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from hf_barred.recipes.barred.output import OutputFolderError, locked_output
    >>> out = Path(tempfile.mkdtemp()) / "run"
    >>> with locked_output(out) as folder:  # doctest: +ELLIPSIS
    ...     try:
    ...         with locked_output(out):
    ...             pass
    ...     except OutputFolderError as err:
    ...         print(str(err).split(":")[1].split(".")[0].strip())
    another run (PID ...) is writing it
    >>> sorted(p.name for p in out.iterdir())   # the lock file stays (deleting it would race a new run)
    ['.barred.lock']
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from filelock import FileLock, Timeout

__all__ = ["LOCK_FILE", "OUTPUT_MARKERS", "PID_FILE", "OutputFolderError", "check_output_folder", "locked_output"]

LOCK_FILE = ".barred.lock"
PID_FILE = ".barred.pid"
OUTPUT_MARKERS = ("summary.json", "augment_stats.json")
"""Files that only a hf_barred run writes: a folder with one of them is ours to update."""


class OutputFolderError(ValueError):
    """The output folder cannot be used (a file, not writable, locked, or someone else's)."""


def os_error_text(err: OSError) -> str:
    """A short reason for ``err`` ("read-only file system", "no space left on device", ...).

    >>> os_error_text(OSError(28, "No space left on device"))
    'no space left on device (errno 28)'
    """
    reason = err.strerror or os.strerror(err.errno or 0) or type(err).__name__
    return f"{reason[0].lower()}{reason[1:]} (errno {err.errno})" if err.errno else reason


def check_output_folder(out: Path, overwrite: bool = False) -> None:
    """Raise :class:`OutputFolderError` when ``out`` cannot hold a run's output (see the module doc)."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(
            f"--output {out}: expected a folder (new or from an earlier run), found a file. Pass another --output."
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputFolderError(
                    f"--output {out}: expected {parent} to be a folder, found a file. Pass another --output."
                )
            break
    if (out / "README.md").is_file() and not any((out / name).is_file() for name in OUTPUT_MARKERS) and not overwrite:
        raise OutputFolderError(
            f"--output {out}: this folder holds a README.md but no {' or '.join(OUTPUT_MARKERS)}, so it is not the "
            "output of a hf_barred run, and the run would replace that README.md with its dataset card. "
            "Pass an empty or new folder, or --overwrite to replace it."
        )


def _holder(out: Path) -> str:
    try:
        info = json.loads((out / PID_FILE).read_text(encoding="utf-8"))
        return f"PID {int(info['pid'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown"


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # only succeeds on an empty folder


@contextlib.contextmanager
def locked_output(output_dir: Union[str, os.PathLike], overwrite: bool = False) -> Iterator[Path]:
    """Check ``output_dir``, create it, and hold its lock while the ``with`` block runs (module doc)."""
    out = Path(output_dir)
    check_output_folder(out, overwrite)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(out / LOCK_FILE), timeout=0)
        lock.acquire()
    except Timeout:
        raise OutputFolderError(
            f"--output {out}: another run ({_holder(out)}) is writing it. Wait for that run to finish, "
            "or pass another --output."
        ) from None
    except OSError as err:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise OutputFolderError(
            f"--output {out}: expected a folder this run can write, but it could not be written: {os_error_text(err)}. "
            "Pass a writable --output with free space."
        ) from None
    failed = True
    try:
        (out / PID_FILE).write_text(json.dumps({"pid": os.getpid()}) + "\n", encoding="utf-8")
        yield out
        failed = False
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM):
            raise OutputFolderError(
                f"--output {out}: could not write the run's files: {os_error_text(err)} ({err.filename or out}). "
                "Free some space or pass a writable --output; run the same command again to resume."
            ) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            (out / PID_FILE).unlink()
        if failed:
            _remove_if_empty(out / "work")
            if created and [p.name for p in out.iterdir()] == [LOCK_FILE]:  # nothing else left: leave no trace
                with contextlib.suppress(OSError):
                    (out / LOCK_FILE).unlink()
                _remove_if_empty(out)
        lock.release()
