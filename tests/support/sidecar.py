"""Starting real sidecars for tests: in-process (fast) or as a subprocess (for kill -9, flagd).

Both listen on loopback ports chosen by the OS and talk real gRPC/HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CATALOG = ROOT / "examples" / "catalog.yaml"


def copy_catalog(
    directory: Path, source: Path = EXAMPLE_CATALOG, name: str = "catalog.yaml"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile(source, target)
    return target


@contextmanager
def in_process(catalog: Path, db: Path, **settings: Any) -> Iterator[Any]:
    """A started `Sidecar` (plangate.sidecar.server.app) on free loopback ports.

    Leaving, the test fails if a callback blocked the sidecar's event loop (see
    `LoopWatch`; design §2.1: nothing on the loop blocks on disk or network).
    """
    from plangate.sidecar.server.app import Sidecar
    from plangate.sidecar.settings import Settings

    opts: dict[str, Any] = {"port": 0, "management_port": 0, "ofrep_port": 0, "poll_seconds": 0.5}
    opts.update(settings)
    watch = LoopWatch.install(Sidecar.LOOP_THREAD)
    seen = len(watch.slow)
    sidecar = Sidecar(Settings(catalog=str(catalog), db=str(db), **opts)).start()
    try:
        yield sidecar
    finally:
        sidecar.stop(grace=0.5)
    slow = watch.slow[seen:]
    assert not slow, "the sidecar's event loop was blocked:\n" + "\n".join(slow)


class LoopWatch:
    """Times every callback the sidecar's loop thread runs (asyncio's debug check, per thread).

    A callback counts as blocking when it held the loop over `SLOW` s while doing real work
    (half of it or more on the thread's CPU: not merely waiting for the GIL held by the test's
    own threads, which in one process says nothing about the sidecar), or over `STUCK` s in
    all (a wait on the network or the disk). Garbage collections are not counted: the test
    process's heap (hypothesis, clients) is not the sidecar's.
    """

    SLOW = 0.05
    STUCK = 1.0
    _installed: LoopWatch | None = None

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.slow: list[str] = []
        self.gc_seconds = 0.0  # spent collecting garbage on the loop thread
        self._gc_start = 0.0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if threading.current_thread().name != self.thread_name:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._gc_start

    @classmethod
    def install(cls, thread_name: str) -> LoopWatch:
        if cls._installed is None:
            watch = cls._installed = cls(thread_name)
            run = asyncio.events.Handle._run

            def timed(handle: asyncio.events.Handle) -> None:
                if threading.current_thread().name != watch.thread_name:
                    return run(handle)
                wall, cpu, collecting = time.perf_counter(), time.thread_time(), watch.gc_seconds
                run(handle)
                collected = watch.gc_seconds - collecting
                wall = time.perf_counter() - wall - collected
                cpu = time.thread_time() - cpu - collected
                if wall >= cls.STUCK or (wall >= cls.SLOW and cpu >= wall / 2):
                    what = getattr(
                        getattr(handle, "_callback", None), "__self__", handle
                    )  # a task's step: the task
                    watch.slow.append(f"{what!r} took {wall:.3f} s ({cpu:.3f} s CPU)")
                return None

            asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
            gc.callbacks.append(watch._gc)
        return cls._installed


class Stubs:
    """Native API stubs on one channel."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        self.channel = (
            grpc.secure_channel(target, credentials)
            if credentials
            else grpc.insecure_channel(target)
        )
        self.evaluation = pb_grpc.EvaluationStub(self.channel)
        self.usage = pb_grpc.UsageStub(self.channel)
        self.admin = pb_grpc.AdminStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Stubs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_READY = re.compile(
    r"gRPC [^ ]+:(\d+)\s+management http://[^ ]+:(\d+)(?:\s+OFREP http://[^ ]+:(\d+))?"
)


class SubprocessSidecar:
    """`plangate serve` as a child process; `kill()` sends SIGKILL, `restart()` reuses the ports."""

    def __init__(
        self,
        catalog: Path,
        db: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        python: str | Path = sys.executable,  # another install's interpreter (packaging test)
    ) -> None:
        self.catalog, self.db, self.extra, self.python = catalog, db, list(extra), python
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.management_port = 0
        self.ofrep_port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> SubprocessSidecar:
        cmd = [
            str(self.python), "-m", "plangate.sidecar.cli.main", "serve",
            "--catalog", str(self.catalog), "--db", str(self.db),
            "--port", str(self.port), "--management-port", str(self.management_port),
            "--ofrep-port", str(self.ofrep_port), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            bufsize=1,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError("sidecar exited during start-up:\n" + "".join(self.log))
                continue
            self.log.append(line)
            match = _READY.search(line)
            if match:
                self.port = int(match.group(1))
                self.management_port = int(match.group(2))
                self.ofrep_port = int(match.group(3) or 0)
                self._drain()
                return self
        raise TimeoutError("sidecar did not report ready:\n" + "".join(self.log))

    def _drain(self) -> None:
        """Keep reading the child's output so it never blocks on a full pipe."""
        proc = self.proc

        def pump() -> None:
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                self.log.append(line)

        threading.Thread(target=pump, daemon=True).start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def restart(self) -> SubprocessSidecar:
        self.kill()
        return self.start()

    def __enter__(self) -> SubprocessSidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll `predicate()` until truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
