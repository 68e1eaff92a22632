"""Where results go: run and sweep directories that are whole or visibly incomplete, never a
mix of two runs, and never written by two commands at once.

- ``output_directory``: a directory this process can write into, or bad input.
- ``claimed``: a directory for one command's results. Without ``--out``, a fresh one next to
  the default name (``runs/default-seed0-2`` when ``runs/default-seed0`` holds an earlier
  run); with ``--out``, the earlier results there are refused unless ``--force`` replaces
  them. A sweep resuming into its own directory is not an earlier result. The directory is
  held (``exclusive``, an advisory ``flock``) while the command writes it: a second command
  into it exits 2 naming the first one's pid.
- ``run_files`` / ``store_run_files``: a run directory's files as bytes, so that a Dask worker
  on another machine hands them to the client, which writes them where the user asked, and
  makes the log's Parquet copy there itself (a copy records the log file it was made from).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .config import ConfigError
from .logdb import COPY_NAME, LOG_NAME, write_copy

LOCK_NAME = ".pagehint.lock"
# What a run directory holds, in the order it is written: summary.json last.
RESULT_FILE_ORDER = ("config.toml", LOG_NAME, COPY_NAME, "error.json", "summary.json")


def output_directory(path: Path, option: str = "--out") -> Path:
    """``path`` made a directory this process can write into, or bad input naming ``option``
    (a file of that name, a place without permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(option, [f"{path}: cannot be made a directory: {reason}"]) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(option, [f"{path}: this process may not write into it"])
    return path


@contextmanager
def claimed(
    chosen: Path | None,
    default: Path,
    results: Collection[str],
    *,
    force: bool,
    resumes: Callable[[Path], bool] = lambda directory: False,
) -> Iterator[tuple[Path, str]]:
    """The directory a command writes ``results`` (names of files or folders) into, held for
    the block (``exclusive``), and what to tell the user about the choice ("" if nothing).

    ``chosen`` (``--out``) holding earlier results is refused, or with ``force`` cleared of
    them; no ``chosen``: ``default``, or the first of ``default-2``, ``default-3``... that
    holds none. A directory that ``resumes`` says this command continues (a sweep's own) holds
    no earlier results.
    """

    def earlier(directory: Path) -> list[str]:
        if resumes(directory):
            return []
        return [name for name in results if (directory / name).exists()]

    said = ""
    if chosen is None:
        directory, number = default, 1
        while earlier(directory):
            number += 1
            directory = default.with_name(f"{default.name}-{number}")
        if number > 1:
            said = f"{default} holds earlier results: this run's are in {directory}"
    else:
        directory = chosen
    with exclusive(output_directory(directory)):
        found = earlier(directory)
        if found and not force:
            raise ConfigError(
                "--out",
                [
                    f"{directory} holds earlier results ({', '.join(found)}); pass --force to "
                    "replace them, or choose another --out"
                ],
            )
        for name in found:
            target = directory / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if found:
            said = f"replaced the earlier results in {directory} (--force)"
        yield directory, said


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold ``directory`` for this process: a second pagehint writing into it is refused with
    the first one's pid. The lock is the kernel's (``flock``): it ends with the process, so a
    killed command leaves nothing to clean up."""
    lock_path = directory / LOCK_NAME
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise ConfigError(
                "--out",
                [
                    f"{directory} is being written by another pagehint (pid {holder}); wait "
                    "for it to end, or choose another --out"
                ],
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a file that exists is never half-written."""
    partial = path.with_name(f"{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def run_files(run_dir: Path) -> dict[str, bytes]:
    """The result files of a run directory, to hand to whoever writes the real one (who makes
    the log's Parquet copy from the log it writes)."""
    return {
        name: (run_dir / name).read_bytes()
        for name in RESULT_FILE_ORDER
        if name != COPY_NAME and (run_dir / name).is_file()
    }


def store_run_files(run_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a run's files into ``run_dir``, and the Parquet copy of a finished run's log,
    ``summary.json`` last: a directory cut short while being written is one without a
    summary, as an interrupted run's is."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / COPY_NAME).unlink(missing_ok=True)
    finished = "summary.json" in files or "error.json" in files
    for name in RESULT_FILE_ORDER:
        if name == COPY_NAME:
            if finished and LOG_NAME in files:
                write_copy(run_dir / LOG_NAME)
        elif name in files:
            write_atomically(run_dir / name, files[name])
