"""CPU, memory and socket figures of a process tree, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


class ProcTree:
    """A process and its descendants (uvicorn's supervisor and its workers)."""

    def __init__(self, root: int) -> None:
        self.root = root

    def pids(self) -> list[int]:
        result, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            result.append(pid)
            todo.extend(_children(pid))
        return result

    def cpu_seconds(self) -> float:
        """user + system CPU seconds of every live process in the tree."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError):
                continue
        return total / TICKS

    def _status(self, key: str) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def rss(self) -> int:
        """Resident bytes now, summed over the tree."""
        return self._status("VmRSS")

    def rss_high_water(self) -> int:
        """Sum of each process's peak resident bytes since it started (VmHWM)."""
        return self._status("VmHWM")

    def sockets(self) -> int:
        """Open socket descriptors (client connections, upstream pools, listeners)."""
        count = 0
        for pid in self.pids():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                            count += 1
                    except OSError:
                        continue
            except OSError:
                continue
        return count


@dataclass
class Sampler:
    """Samples RSS and open sockets of a tree every ``interval`` seconds in a thread."""

    tree: ProcTree
    interval: float = 0.2
    peak_rss: int = 0
    peak_sockets: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.tree.rss())
        self.peak_sockets = max(self.peak_sockets, self.tree.sockets())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
