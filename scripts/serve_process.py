"""A `ttt serve` child process for the scripts and end-to-end tests that drive the server.

Shared by scripts/http_bench.py, scripts/load_test.py and tests/server_hostile_e2e.py: the
server is started on port 0 (the kernel picks a free one), its log is read for the port it
printed, and it counts as up once GET /health answers 200.
"""
import http.client
import os
import re
import subprocess
import time


def init_model(ttt, config_path, out, seed):
    """`ttt init` of a config file into `out` (a model directory); returns `out`."""
    subprocess.run([ttt, "init", "--config", config_path, "--seed", str(seed), "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def health_ok(port, timeout=5):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("GET", "/health")
            return c.getresponse().status == 200
        finally:
            c.close()
    except OSError:
        return False


class ServeProcess:
    """`ttt serve --model MODEL --port 0 ARGS...`, output in a log file under `work`."""

    def __init__(self, ttt, model, work, *args, timeout=60, log_prefix="server"):
        self.log_path = os.path.join(work, "%s-%d.log" % (log_prefix, time.monotonic_ns()))
        self.log = open(self.log_path, "w+")
        self.p = subprocess.Popen([ttt, "serve", "--model", model, "--port", "0", *args],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + timeout
        while time.time() < deadline and self.port is None:
            self.log.seek(0)
            m = re.search(r"listening on http://[^:]+:(\d+)", self.log.read())
            if m:
                self.port = int(m.group(1))
            elif self.p.poll() is not None:
                break
            else:
                time.sleep(0.05)
        if self.port is None:
            self.log.seek(0)
            raise RuntimeError("server did not start: " + self.log.read()[-2000:])
        while time.time() < deadline:
            if health_ok(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("server not ready within %d s" % timeout)

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
        self.p.terminate()
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.log.close()
        return rc
