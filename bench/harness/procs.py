"""Process handling: start servers, wait for their port, read CPU and memory of a process tree.

Only processes this harness started are ever signalled (by pid). CPU time comes from
/proc/PID/stat (utime+stime, in clock ticks) summed over the tree (nginx: master + workers);
memory from /proc/PID/status (VmRSS, VmHWM) and /proc/PID/smaps_rollup (Pss).
"""

import os
import signal
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    """Wait until 127.0.0.1:port accepts; False if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    """pid and all its descendants."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_kb(pids):
    """Sums over the tree: rss, hwm (per-process peak), pss (shared pages split fairly)."""
    return {
        "rss_kb": sum(_status_kb(p, "VmRSS") for p in pids),
        "hwm_kb": sum(_status_kb(p, "VmHWM") for p in pids),
        "pss_kb": sum(_pss_kb(p) for p in pids),
    }


class MemSampler:
    """Samples the tree's RSS/PSS every `period` s while a load runs; keeps the maxima."""

    def __init__(self, pid, period=0.25):
        self.pid, self.period = pid, period
        self.peak = {"rss_kb": 0, "pss_kb": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            m = mem_kb(tree(self.pid))
            for k in self.peak:
                self.peak[k] = max(self.peak[k], m[k])
            self._stop.wait(self.period)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


class Server:
    """A server process we own. `cmd` runs with `env` added to ours; logs go to `log`."""

    def __init__(self, name, cmd, port, log, env=None, cwd=None):
        self.name, self.cmd, self.port, self.log = name, cmd, port, log
        self.env = dict(os.environ, **(env or {}))
        self.cwd = cwd
        self.proc = None

    def start(self, timeout=30):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
            cwd=self.cwd, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        if not wait_port(self.port, timeout, self.proc):
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{self.name} did not come up on port {self.port}: {tail}")
        return self

    def pids(self):
        return tree(self.proc.pid)

    def log_tail(self, n=800):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=30, traced=False):
        """SIGTERM our process (it stops its own children), then SIGKILL its tree if needed.
        traced: our process is a tracer (strace); signal the traced child instead, so the
        tracer writes its summary when the child exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = self.pids()
        kids = _children(self.proc.pid)
        if traced and kids:
            os.kill(kids[0], signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait(5)
