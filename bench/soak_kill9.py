#!/usr/bin/env python3
"""kill -9 soak: Leveret under confirmed load, killed and restarted N times on the same data dir.

Each cycle: a publisher process (publisher confirms, ids in order, every confirmed id written to a file and
flushed per confirm) and, with --with-consumers, acking consumers run against `leveret server` (SQLite,
throw-away data dir, free ports); at a random moment the broker gets SIGKILL; it is started again on the
same data dir and the whole durable queue is read back (nothing acked), which must hold

  - every confirmed id that is still due, exactly once: confirmed ids not acked, and everything left queued
    by the cycles before (a backlog carried across kills); acks journalled before a confirmed marker must
    not come back; acks after it (the documented window) may come back, once;
  - in publish order, with nothing that was never published or was already removed;
  - every message flagged redelivered (after an unclean stop Leveret cannot know which were delivered);
  - as many messages as the broker's "recovered N messages" log line says.

Then a random prefix of the queue is acked (made durable by a confirmed marker) and the rest is left
queued for the next cycle. After the last cycle the broker is stopped with SIGTERM and restarted once more:
the queue must hold exactly what was left. The kill moments and the drained fractions come from --seed,
so a schedule can be replayed (the exact message counts depend on timing). Brokers and clients are
started here and stopped by PID.

Exit status: 0 all cycles verified, 1 a violation (or a broker that did not come back), 2 could not run
or stopped at --time-limit.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pika

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLIENTS = BENCH_DIR / "soak_clients.py"


def expected_body(i: int, size: int) -> bytes:
    """soak_clients.body(i, size) for size > 0."""
    unit = b"%d " % i
    return (unit * (size // len(unit) + 1))[: max(size, len(unit))]
WINDOW = 256  # soak_clients.WINDOW: unconfirmed publishes in flight
QUEUE, BARRIER = "soak", "barrier"
RECOVERY_LINE = re.compile(r"recovered (\d+) durable queues and (\d+) messages in ([\d.]+) s")
LISTEN_LINE = re.compile(r"AMQP listening on [\d.]+:(\d+)")


class Violation(Exception):
    pass


# ------------------------------------------------------------------------------------------ broker
@dataclass
class Broker:
    """`leveret server` on one data dir; its log goes to a file and is kept in memory."""

    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    lines: list[str] = field(default_factory=list)

    def start(self, timeout: float) -> float:
        """Start and wait until it serves; return the monotonic time the listening line was read."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
        buf: list[str] = []
        self.lines = buf  # a fresh list: the previous process's reader may still be at its EOF
        self.port = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leveret", "server", "--storage", "sqlite", "--amqp-port", "0",
             "--http-port", "off", "--prometheus-port", "off", "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        log = open(self.log_path, "a")  # noqa: SIM115 - closed by the reader thread
        log.write(f"---- start, pid {self.proc.pid}\n")
        found: dict[str, float] = {}

        def reader(stream: IO[str]) -> None:
            with stream, log:
                for line in stream:
                    buf.append(line)
                    log.write(line)
                    log.flush()
                    if "serving" not in found and (m := LISTEN_LINE.search(line)):
                        self.port = int(m.group(1))
                        found["serving"] = time.monotonic()

        threading.Thread(target=reader, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while "serving" not in found:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise Violation(f"broker did not start within {timeout:.0f} s:\n" + "".join(self.lines[-20:]))
            time.sleep(0.005)
        return found["serving"]

    def recovery(self) -> tuple[int, int, float]:
        for line in self.lines:
            if m := RECOVERY_LINE.search(line):
                return int(m.group(1)), int(m.group(2)), float(m.group(3))
        raise Violation("no recovery line in the broker's log")

    def kill(self) -> float:
        """SIGKILL by PID; return the monotonic time of the kill."""
        t = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        return t

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=port, credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=10, blocked_connection_timeout=30, connection_attempts=1, heartbeat=0))


def lines(path: Path) -> list[str]:
    """Complete lines of a file a killed process was appending to (a torn last line is dropped)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]


# ------------------------------------------------------------------------------------------ the soak
@dataclass
class Soak:
    args: argparse.Namespace
    workdir: Path
    broker: Broker
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)  # what the queue holds, in order, after the last check
    gone: set[int] = field(default_factory=set)  # ids removed durably (acked before a marker, or by us)
    ever_delivered: set[int] = field(default_factory=set)
    rows: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def client(self, *argv: object, tag: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{tag}.out", "ab")  # noqa: SIM115 - handed to the child
        p = subprocess.Popen([sys.executable, str(CLIENTS), *map(str, argv)], stdout=out, stderr=out)
        out.close()
        self.clients.append(p)
        return p

    def stop_clients(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        for p in self.clients:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        self.clients.clear()

    def fail(self, where: str, msg: str) -> None:
        self.violations.append(f"{where}: {msg}")
        print(f"  VIOLATION: {msg}", flush=True)

    def cycle(self, c: int, delay: float, frac: float) -> dict[str, Any]:
        a = self.args
        where = f"cycle {c + 1}"
        prev = set(self.queued)
        first = c * 100_000_000  # far above anything a cycle can publish
        conf_path = self.workdir / f"confirmed-{c}"
        ack_paths = [self.workdir / f"acked-{c}-{n}" for n in range(a.consumers if a.with_consumers else 0)]
        self.client("publish", self.broker.port, QUEUE, conf_path, first, a.body_size, tag=f"publisher-{c}")
        for n, path in enumerate(ack_paths):
            self.client("ack", self.broker.port, QUEUE, path, tag=f"acker-{c}-{n}")
        deadline = time.monotonic() + 20
        while not lines(conf_path):  # under load before the clock starts
            if time.monotonic() > deadline:
                raise Violation("the publisher got no confirm within 20 s")
            time.sleep(0.01)
        time.sleep(delay)
        t_kill = self.broker.kill()
        self.stop_clients()

        conf_lines = lines(conf_path)
        confirmed = [int(x) for x in conf_lines if not x.startswith("n")]
        nacked = [int(x.split()[1]) for x in conf_lines if x.startswith("n")]
        durable_acks: set[int] = set()
        window: set[int] = set()
        acked_seen: list[int] = []
        for path in ack_paths:
            pending: list[int] = []
            last = -1
            for line in lines(path):
                if line == "b":
                    durable_acks.update(pending)
                    pending = []
                    continue
                _, i_s, r_s = line.split()
                i, redelivered = int(i_s), r_s == "1"
                if i <= last:
                    self.fail(where, f"consumer {path.name} got {i} after {last}: out of order")
                last = i
                if i in self.ever_delivered and not redelivered:
                    self.fail(where, f"{i} delivered again to a consumer without the redelivered flag")
                acked_seen.append(i)
                pending.append(i)
            window.update(pending)
        if len(acked_seen) != len(set(acked_seen)):
            self.fail(where, f"{len(acked_seen) - len(set(acked_seen))} ids delivered to two consumers in one run")
        published_below = first + len(confirmed) + len(nacked) + WINDOW
        strange = {i for i in acked_seen if i not in prev and not first <= i < published_below}
        if strange:
            self.fail(where, f"consumers got {len(strange)} ids that were not queued, e.g. {sorted(strange)[:5]}")
        self.ever_delivered.update(acked_seen)

        t_serving = self.broker.start(a.start_timeout)
        row = self.check(where, first, confirmed, nacked, durable_acks, window, frac)
        row.update(cycle=c, delay_s=delay, confirmed=len(confirmed), nacked=len(nacked),
                   acked=len(acked_seen), durable_acks=len(durable_acks), window=len(window),
                   kill_to_serving_s=t_serving - t_kill)
        return row

    def read_queue(self, where: str) -> tuple[pika.BlockingConnection, Any, list[Any]]:
        """Consume the whole queue without acking; return the connection, channel and deliveries."""
        conn = connect(self.broker.port)
        ch = conn.channel()
        depth = ch.queue_declare(QUEUE, durable=True, passive=True).method.message_count
        ch.basic_qos(prefetch_count=0)
        got: list[Any] = []
        if depth:
            size = self.args.body_size
            for method, _props, body in ch.consume(QUEUE, inactivity_timeout=5):
                if method is None:
                    break
                i = int(body.split(b" ", 1)[0])
                if size and body != expected_body(i, size):
                    self.fail(where, f"message {i} came back with a different body ({len(body)} bytes)")
                got.append((method.delivery_tag, i, bool(method.redelivered)))
                if len(got) == depth:
                    break
        if len(got) != depth:
            self.fail(where, f"queue.declare said {depth} messages, {len(got)} were delivered")
        return conn, ch, got

    def settle(self, conn: pika.BlockingConnection, ch: Any, got: list[Any], keep_from: int) -> None:
        """Ack got[:keep_from], make the acks durable (confirmed marker), leave the rest queued."""
        if keep_from:
            ch.basic_ack(got[keep_from - 1][0], multiple=True)
        marker = conn.channel()
        marker.confirm_delivery()
        marker.basic_publish("", BARRIER, b"x", pika.BasicProperties(delivery_mode=2))
        marker.queue_purge(BARRIER)
        conn.close()  # unacked deliveries go back to their places
        self.gone.update(i for _, i, _ in got[:keep_from])
        self.queued = [i for _, i, _ in got[keep_from:]]

    def check(self, where: str, first: int, confirmed: list[int], nacked: list[int], durable_acks: set[int],
              window: set[int], frac: float) -> dict[str, Any]:
        queues, recovered, rec_s = self.broker.recovery()
        if not any("unclean stop" in line for line in self.broker.lines if RECOVERY_LINE.search(line)):
            self.fail(where, "the recovery log line does not say the stop was unclean")
        conn = connect(self.broker.port)
        barrier = conn.channel().queue_declare(BARRIER, durable=True, passive=True).method.message_count
        conn.close()
        conn, ch, got = self.read_queue(where)
        ids = [i for _, i, _ in got]
        idset = set(ids)
        prev = set(self.queued)
        published_below = first + len(confirmed) + len(nacked) + WINDOW
        if queues != 2:
            self.fail(where, f"recovered {queues} durable queues, expected 2")
        if recovered != len(ids) + barrier:
            self.fail(where, f"log says {recovered} messages recovered, queues hold {len(ids)} + {barrier} markers")
        if len(idset) != len(ids):
            self.fail(where, f"{len(ids) - len(idset)} duplicated ids in the recovered queue")
        if any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
            bad = next(k for k in range(1, len(ids)) if ids[k] <= ids[k - 1])
            self.fail(where, f"out of order: {ids[bad - 1]} before {ids[bad]}")
        not_flagged = sum(1 for _, _, r in got if not r)
        if not_flagged:
            self.fail(where, f"{not_flagged} recovered messages not flagged redelivered after kill -9")
        due = (prev | set(confirmed)) - durable_acks - window
        lost = due - idset
        if lost:
            self.fail(where, f"{len(lost)} confirmed/queued messages lost, e.g. {sorted(lost)[:5]}")
        back = idset & (durable_acks | self.gone)
        if back:
            self.fail(where, f"{len(back)} messages whose ack was on disk came back, e.g. {sorted(back)[:5]}")
        phantom = {i for i in idset - prev if not first <= i < published_below}
        if phantom:
            self.fail(where, f"{len(phantom)} ids that were never published here, e.g. {sorted(phantom)[:5]}")
        self.ever_delivered.update(ids)
        self.gone.update(durable_acks)
        keep_from = round(frac * len(ids))
        if len(ids) - keep_from > self.args.max_backlog:
            keep_from = len(ids) - self.args.max_backlog
        self.settle(conn, ch, got, keep_from)
        return {"recovered": recovered - barrier, "recovery_s": rec_s, "window_back": len(idset & window),
                "unconfirmed_kept": len({i for i in idset if i >= first} - set(confirmed)),
                "drained": keep_from, "kept": len(ids) - keep_from}

    def final_clean_restart(self) -> dict[str, Any]:
        """SIGTERM, restart: the queue must hold exactly what was left, in order."""
        rc = self.broker.terminate()
        if rc != 0:
            self.fail("clean restart", f"broker exited {rc} on SIGTERM")
        t0 = time.monotonic()
        t_serving = self.broker.start(self.args.start_timeout)
        _, recovered, rec_s = self.broker.recovery()
        conn, ch, got = self.read_queue("clean restart")
        ids = [i for _, i, _ in got]
        if ids != self.queued:
            self.fail("clean restart", f"the queue holds {len(ids)} messages, not exactly the {len(self.queued)} "
                                       f"left ({len(set(self.queued) - set(ids))} missing, "
                                       f"{len(set(ids) - set(self.queued))} unexpected, or out of order)")
        self.settle(conn, ch, got, len(got))
        rc = self.broker.terminate()
        if rc != 0:
            self.fail("clean stop", f"broker exited {rc} on SIGTERM")
        return {"recovered": len(ids), "log_recovered": recovered, "recovery_s": rec_s,
                "start_to_serving_s": t_serving - t0}


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/soak_kill9.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python bench/soak_kill9.py                       # 20 cycles, publisher only (~1-2 min)\n"
               "  python bench/soak_kill9.py --with-consumers      # + 2 consumers acking during the load\n"
               "  python bench/soak_kill9.py --cycles 200 --seed 7 --time-limit 3600\n"
               "  python bench/soak_kill9.py --seed 42 --cycles 3 --keep-dir   # replay a schedule, keep logs\n")
    p.add_argument("--cycles", type=int, default=20, help="kill -9 / restart cycles (default 20)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the kill moments and drained fractions (default: random, printed)")
    p.add_argument("--with-consumers", action="store_true",
                   help="run consumers that ack (with durable markers) alongside the publisher")
    p.add_argument("--consumers", type=int, default=2, metavar="N",
                   help="how many consumers with --with-consumers (default 2)")
    p.add_argument("--max-delay", type=float, default=3.0, metavar="S",
                   help="the kill comes 0..S seconds after the first confirm of the cycle (default 3)")
    p.add_argument("--max-backlog", type=int, default=50_000, metavar="N",
                   help="most messages left queued from one cycle to the next (default 50,000)")
    p.add_argument("--start-timeout", type=float, default=60, metavar="S",
                   help="how long a (re)start may take before it counts as a failure (default 60)")
    p.add_argument("--time-limit", type=float, default=900, metavar="S",
                   help="no new cycle starts after S seconds (default 900); then exit status 2")
    p.add_argument("--body-size", type=int, default=0, metavar="B",
                   help="bodies of B bytes (\"ID \" repeated; checked byte for byte when read back); 32768 or"
                        " more puts them in segment files (default: the id alone)")
    p.add_argument("--keep-dir", action="store_true",
                   help="keep the data dir, broker log and client files (printed at the end)")
    a = p.parse_args(argv)
    if a.cycles < 1 or a.consumers < 1 or a.max_delay < 0 or a.max_backlog < 0:
        p.error("--cycles and --consumers must be >= 1, --max-delay and --max-backlog >= 0")
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1_000_000)
    return a


def stats(xs: list[float]) -> str:
    return f"min {min(xs):.3f} / median {statistics.median(xs):.3f} / max {max(xs):.3f}" if xs else "-"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    rng = random.Random(a.seed)
    schedule = []
    for _ in range(a.cycles):  # drawn up front: the same seed gives the same schedule whatever happens
        delay, r1, r2 = rng.uniform(0, a.max_delay), rng.random(), rng.random()
        schedule.append((delay, 0.0 if r1 < 0.15 else 1.0 if r1 < 0.35 else r2))
    workdir = Path(tempfile.mkdtemp(prefix="leveret-soak-"))
    broker = Broker(workdir / "data", workdir / "broker.log")
    soak = Soak(a, workdir, broker)
    print(f"kill -9 soak: {a.cycles} cycles, seed {a.seed}, "
          f"{f'{a.consumers} acking consumers' if a.with_consumers else 'publisher only'}, "
          f"data dir {broker.data_dir}", flush=True)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    status = 0
    final: dict[str, Any] = {}
    try:
        broker.start(a.start_timeout)
        conn = connect(broker.port)
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.queue_declare(BARRIER, durable=True)
        conn.close()
        for c, (delay, frac) in enumerate(schedule):
            if time.monotonic() - t0 > a.time_limit:
                print(f"time limit ({a.time_limit:.0f} s) reached after {c} cycles", flush=True)
                status = 2
                break
            before = len(soak.violations)
            row = soak.cycle(c, delay, frac)
            soak.rows.append(row)
            acks = (f"  acked {row['acked']:,} ({row['durable_acks']:,} durable, {row['window']:,} window, "
                    f"{row['window_back']:,} back)" if a.with_consumers else "")
            print(f"cycle {c + 1:>3}/{a.cycles}  kill at +{delay:.2f} s  confirmed {row['confirmed']:>6,}{acks}"
                  f"  recovered {row['recovered']:>6,} in {row['recovery_s']:.3f} s"
                  f"  kill->serving {row['kill_to_serving_s']:.2f} s  drained {row['drained']:,}, kept {row['kept']:,}"
                  f"  {'ok' if len(soak.violations) == before else 'VIOLATION'}", flush=True)
        final = soak.final_clean_restart()
        print(f"clean restart (SIGTERM): {final['recovered']:,} messages, exactly those left, "
              f"serving {final['start_to_serving_s']:.2f} s after start", flush=True)
    except (Violation, pika.exceptions.AMQPError, OSError, subprocess.SubprocessError) as e:
        soak.fail(f"cycle {len(soak.rows) + 1}", f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 2
    finally:
        for p in soak.clients:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        broker.kill()

    rows = soak.rows
    print(f"\nsummary: {len(rows)} kill -9 cycles in {time.monotonic() - t0:.0f} s, seed {a.seed}")
    if rows:
        print(f"  confirmed {sum(r['confirmed'] for r in rows):,} messages"
              + (f", {sum(r['nacked'] for r in rows):,} nacked" if any(r["nacked"] for r in rows) else "")
              + (f"; consumers acked {sum(r['acked'] for r in rows):,} ({sum(r['window'] for r in rows):,} in "
                 f"the window, {sum(r['window_back'] for r in rows):,} of those came back)" if a.with_consumers else ""))
        rec = [r["recovered"] for r in rows]
        print(f"  recovered per restart: min {min(rec):,} / median {statistics.median(rec):,.0f} / max {max(rec):,} "
              f"messages; "
              f"{sum(r['unconfirmed_kept'] for r in rows):,} unconfirmed publishes were kept (allowed)")
        print(f"  recovery (log) s: {stats([r['recovery_s'] for r in rows])}")
        print(f"  kill -> serving s: {stats([r['kill_to_serving_s'] for r in rows])}")
    if soak.violations:
        print(f"  {len(soak.violations)} VIOLATION(S):")
        for v in soak.violations[:20]:
            print(f"    {v}")
        status = 1
    elif status == 0:
        print("  no violations: nothing confirmed lost, nothing duplicated, order kept, all recovered "
              "messages flagged redelivered")
    if a.keep_dir:
        print(f"  kept {workdir} (data/, broker.log, confirmed-*, acked-*)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
