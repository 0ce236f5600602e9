#!/usr/bin/env python3
"""Per-node responsiveness during a cluster run (tools/scripts/cluster-latency.sh, PROBE=1).

  node-probe.py PORTS SECONDS OUT PIDS

PORTS: comma-separated client ports; one connection each sends a PING, waits for the reply,
sleeps 2 ms, and so on (a node not up yet is retried every 10 ms). PIDS: comma-separated
server pids, whose threads' /proc/<pid>/task/*/schedstat (time on CPU, time runnable but
waiting for a CPU) are sampled every 20 ms. Writes OUT.ping ("port t_send latency_ms" per
PING) and OUT.sched ("t run_ns wait_ns ..." per sample, one pair per pid) until SECONDS pass.
"""
import glob
import socket
import sys
import threading
import time

ports = [int(p) for p in sys.argv[1].split(",")]
end = time.time() + float(sys.argv[2])
out = sys.argv[3]
pids = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
lock = threading.Lock()
pings = open(out + ".ping", "w")


def ping(port):
    s = None
    while time.time() < end:
        if s is None:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                s = None
                time.sleep(0.01)
                continue
        t = time.time()
        try:
            s.sendall(b"PING\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise OSError("closed")
                buf += chunk
        except OSError:
            s = None
            continue
        with lock:
            pings.write(f"{port} {t:.6f} {(time.time() - t) * 1000:.3f}\n")
        time.sleep(0.002)


def sched():
    with open(out + ".sched", "w") as f:
        while time.time() < end:
            row = [f"{time.time():.6f}"]
            for p in pids:
                run = wait = 0
                for path in glob.glob(f"/proc/{p}/task/*/schedstat"):
                    try:
                        a = open(path).read().split()
                        run += int(a[0])
                        wait += int(a[1])
                    except (OSError, ValueError, IndexError):
                        pass
                row.append(f"{run} {wait}")
            f.write(" ".join(row) + "\n")
            time.sleep(0.02)


threads = [threading.Thread(target=ping, args=(p,)) for p in ports]
threads.append(threading.Thread(target=sched))
for t in threads:
    t.start()
for t in threads:
    t.join()
pings.close()
