"""Start and stop the brokers under test, each on its own ports and data dir, always by PID.

Two brokers, one interface (`Broker`):

- `LeveretBroker` runs ``python -m leveret server --amqp-port N --http-port 0 --data-dir DIR`` (or any
  command given) and waits for its ``AMQP listening on 127.0.0.1:PORT`` log line.
- `RabbitMQBroker` runs the ``rabbitmq-server`` *script* of the installed RabbitMQ (not Debian's
  ``/usr/sbin`` wrapper, which switches to the ``rabbitmq`` user and writes to ``/var/log``) with an
  environment that points every file it writes into a private work dir, its node name, AMQP port and
  distribution port at values chosen here, and its epmd at a private `Epmd` on loopback. See
  bench/README.md for what was learnt about starting and stopping it quickly.

Both can be started again on the same data dir (`start()` after `kill9()` or `stop()`), which is how the
storage scenario measures recovery. Nothing here ever signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
LISTEN_RE = re.compile(rb"AMQP listening on ([0-9.]+|\[[0-9a-fA-F:]+\]|[\w.-]+):(\d+)")


class BrokerError(RuntimeError):
    """A broker did not start, or died, with the tail of its log in the message."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def amqp_handshake_ok(port: int, timeout: float = 1.0) -> bool:
    """True when something on 127.0.0.1:port answers the AMQP 0-9-1 header with a method frame."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(AMQP_HEADER)
            data = b""
            while len(data) < 7:
                chunk = s.recv(7 - len(data))
                if not chunk:
                    return False
                data += chunk
            return data[0] == 1  # frame type 1: method (connection.start)
    except OSError:
        return False


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/PID/status, or -1 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of PID (all its threads) in seconds, or -1."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return -1.0


def _tail(path: Path, nbytes: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"


def _stop_pid(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> bool:
    """Send `sig` to our child `proc` and wait up to `timeout`; True if it exited."""
    if proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


class Broker:
    """A broker process we own. Subclasses fill in `_spawn` and `_after_spawn`."""

    name = "broker"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the PID whose CPU and RSS are the broker's (the BEAM for RabbitMQ)
        self.starts = 0
        self.log_path = self.workdir / f"{self.name}.log"
        self.started_at = 0.0
        self.ready_after_s = 0.0
        self.stop_took_s = 0.0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def version(self) -> str:
        return ""

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Spawn the broker (same data dir, same port as any previous start); with `wait`, block until it
        answers the AMQP header, raising BrokerError if it exits or `timeout` passes first."""
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError(f"{self.name} already running (pid {self.proc.pid})")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start #{self.starts} at {time.strftime('%H:%M:%S')} ====\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = self._spawn(log)
        self.pid = self.proc.pid
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        self._after_spawn(deadline)
        while time.monotonic() < deadline:
            self._check_alive()
            if amqp_handshake_ok(self.port):
                self.ready_after_s = time.monotonic() - self.started_at
                return
            time.sleep(0.05)
        raise BrokerError(f"{self.name} not ready after {timeout:.0f}s; log tail:\n{_tail(self.log_path)}")

    def _check_alive(self) -> None:
        assert self.proc is not None
        rc = self.proc.poll()
        if rc is not None:
            raise BrokerError(f"{self.name} exited with status {rc}; log tail:\n{_tail(self.log_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after `timeout`. Idempotent."""
        if self.proc is None:
            return
        t0 = time.monotonic()
        if not _stop_pid(self.proc, signal.SIGTERM, timeout):
            self._kill_all()
        self.stop_took_s = time.monotonic() - t0
        self.proc = None

    def kill9(self) -> int:
        """SIGKILL the broker process itself (not a wrapper) and reap it; returns the kill time in ns
        (time.time_ns, wall clock, comparable with amqpperf's unix_ns timestamps)."""
        assert self.proc is not None
        t = time.time_ns()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._reap_after_kill()
        return t

    def _reap_after_kill(self) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill_all()
        self.proc = None

    def _kill_all(self) -> None:
        assert self.proc is not None
        for pid in {self.pid, self.proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def cpu_s(self) -> float:
        return proc_cpu_seconds(self.pid)

    # -- per broker -----------------------------------------------------------------------------------
    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _after_spawn(self, deadline: float) -> None:
        """Called by wait_ready before polling the port (e.g. to learn the real PID or port)."""


class LeveretBroker(Broker):
    """Leveret as ``CMD server --amqp-port PORT --http-port 0 --prometheus-port 0 --data-dir DIR [EXTRA...]``."""

    name = "leveret"

    def __init__(self, workdir: Path, cmd: Sequence[str], extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.cmd = list(cmd)
        self.extra_args = list(extra_args)
        self.env = env
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self._log_offset = 0

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        self._log_offset = self.log_path.stat().st_size
        # Prometheus on a free port too: two Leverets may be up at once (the idle-connections scenario's
        # fresh broker beside the interleaved one), and 15692 may be taken.
        argv = [*self.cmd, "server", "--amqp-port", str(self.port), "--http-port", "0", "--prometheus-port", "0",
                "--data-dir", str(self.data_dir), *self.extra_args]
        with open(self.log_path, "ab") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, cwd=self.workdir, start_new_session=True)

    def _after_spawn(self, deadline: float) -> None:
        # The log line is the contract ("AMQP listening on 127.0.0.1:PORT"); trust its port.
        while time.monotonic() < deadline:
            self._check_alive()
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                m = LISTEN_RE.search(f.read())
            if m:
                self.port = int(m.group(2))
                return
            time.sleep(0.02)
        raise BrokerError(f"leveret printed no 'AMQP listening on' line; log tail:\n{_tail(self.log_path)}")

    @property
    def version(self) -> str:
        return "working tree"


def find_rabbitmq_server(explicit: str | None = None) -> Path | None:
    """The real ``rabbitmq-server`` script (sbin/ of the RabbitMQ release), or None if not installed.

    Debian's /usr/sbin/rabbitmq-server is a wrapper that su's to the rabbitmq user and redirects output to
    /var/log/rabbitmq; we want the script it calls."""
    cands: list[str] = []
    if explicit:
        cands.append(explicit)
    cands += sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"),
                    key=_version_key, reverse=True)
    which = shutil.which("rabbitmq-server")
    if which:
        cands.append(which)
    for c in cands:
        p = Path(c).resolve()
        if p.name == "rabbitmq-script-wrapper":
            p = Path("/usr/lib/rabbitmq/bin/rabbitmq-server").resolve()
        if p.is_file() and os.access(p, os.X_OK) and (p.parent / "rabbitmq-env").exists():
            return p
    return None


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"rabbitmq_server-(\d+(?:\.\d+)*)", path)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


class Epmd:
    """A private Erlang port mapper on 127.0.0.1:PORT, in the foreground, stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        log = open(self.workdir / "epmd.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen([exe, "-address", "127.0.0.1", "-port", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"epmd exited: {_tail(self.workdir / 'epmd.log')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.02)
        raise BrokerError("epmd did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            if not _stop_pid(self.proc, signal.SIGTERM, 5):
                _stop_pid(self.proc, signal.SIGKILL, 5)
            self.proc = None


class RabbitMQBroker(Broker):
    """RabbitMQ started from its own rabbitmq-server script, fully sandboxed in `workdir`.

    `pid` is the BEAM (beam.smp), a child of the script's shell: the script backgrounds ``erl`` (which
    exec's erlexec, which exec's beam.smp, all in one PID) and waits for it, turning SIGTERM into a clean
    stop. `stop()` signals the script; `kill9()` signals the BEAM."""

    name = "rabbitmq"

    def __init__(self, workdir: Path, script: Path, epmd: Epmd,
                 nodename: str = "rabbit-bench@localhost", management: bool = False) -> None:
        """``management``: also enable the rabbitmq_management plugin, its HTTP listener on
        127.0.0.1:`http_port` (a free port chosen here; 0 without it). It may answer a moment after
        AMQP does (`wait_ready` waits for AMQP only)."""
        super().__init__(workdir)
        self.script = script
        self.epmd = epmd
        self.nodename = nodename
        self.dist_port = free_port()
        self.http_port = free_port() if management else 0
        self.home = self.workdir / "home"
        for d in ("home", "mnesia", "log"):
            (self.workdir / d).mkdir(exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_management].\n" if management else "[].\n")
        (self.workdir / "rabbitmq.conf").write_text(
            "# written by bench/brokers.py\n"
            "loopback_users = none\n"
            "log.file.level = info\n"
            # stats every 500 ms (default 5 s), so a test sees queue objects in full soon
            + (f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.http_port}\n"
               "collect_statistics_interval = 500\n" if management else "")
        )

    @property
    def version(self) -> str:
        m = re.search(r"rabbitmq_server-([\d.]+)", str(self.script))
        return m.group(1) if m else "?"

    def env(self) -> dict[str, str]:
        w = self.workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.home),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_PID_FILE": str(w / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(w / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(w / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd.port),
            # our epmd is already running; keep distribution on loopback too
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
        })
        env.pop("RABBITMQ_ALLOW_INPUT", None)  # keep the script's SIGTERM -> clean stop handler
        return env

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        (self.workdir / "rabbitmq-env.conf").touch()
        return subprocess.Popen([str(self.script)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=self.env(), cwd=self.home,
                                start_new_session=True)

    def _after_spawn(self, deadline: float) -> None:
        # Find the BEAM: the script's only child, once it has exec'd into beam.smp.
        assert self.proc is not None
        sh = self.proc.pid
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                children = Path(f"/proc/{sh}/task/{sh}/children").read_text().split()
            except OSError:
                children = []
            for c in children:
                try:
                    comm = Path(f"/proc/{c}/comm").read_text().strip()
                except OSError:
                    continue
                if comm.startswith("beam"):
                    self.pid = int(c)
                    return
            time.sleep(0.02)
        raise BrokerError("rabbitmq-server: no beam.smp child appeared")

    def kill9(self) -> int:
        if self.pid == (self.proc.pid if self.proc else 0):
            self._after_spawn(time.monotonic() + 10)
        return super().kill9()
