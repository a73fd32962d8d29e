"""A real small filesystem for disk-full cases: a tmpfs mounted for the test (needs root; the
case skips with that reason without it), and filling it up."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path`, unmounted afterwards whatever happens."""
    path.mkdir()
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {run.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


@contextmanager
def ext4_filesystem(path: Path, size: str) -> Iterator[Path]:
    """An ext4 filesystem in a file, mounted at `path` through a loop device (needs root), so
    that `shut_down` can make its every read and write an I/O error."""
    path.mkdir()
    image = path.with_name(path.name + ".img")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, text=True)
    run = (
        made
        if made.returncode
        else subprocess.run(
            ["mount", "-o", "loop", str(image), str(path)], capture_output=True, text=True
        )
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount an ext4 image here (needs root and loop devices): {run.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        image.unlink()


def shut_down(path: Path) -> None:
    """Every later read and write on the filesystem at `path` fails with EIO, as on a failing
    disk (ext4's EXT4_IOC_SHUTDOWN, what xfs_io's `shutdown` does; no device mapper needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, _EXT4_IOC_SHUTDOWN, struct.pack("I", _NOLOGFLUSH))
    finally:
        os.close(fd)


_EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
_NOLOGFLUSH = 2


def remount(path: Path, mode: str) -> None:
    """Remount the filesystem at `path` read-only ("ro") or read-write ("rw")."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)
