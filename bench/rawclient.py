"""A plain pyzmq client for the benchmarks: times a cell at the socket.

jupyter_client decodes every message of a cell (JSON, dates, signature) before it reads the next,
so a cell that sends more messages looks slower through it even if the kernel's part is the same.
This client reads each message's header only: what the kernel itself takes, as a front-end that
decodes lazily (JupyterLab in the browser) would wait for it. Used by carbon_bench.py (part 1b)
and llm_bench.py (--socket), with `drain` for the jupyter_client of the same kernel: every
subscriber gets every iopub message, so a client not read meanwhile has a backlog.
"""

import json
import queue
import time


def drain(kc, quiet_s=0.0):
    """Reads (and drops) the jupyter_client `kc`'s iopub backlog, until nothing came for
    `quiet_s` (0: what is queued now)."""
    while True:
        try:
            kc.get_iopub_msg(timeout=quiet_s)
        except queue.Empty:
            return


class RawClient:
    """Plain pyzmq shell + iopub sockets on a running kernel: times a cell from the request to
    its execute_reply and idle status, reading each message's header only (no JSON decoding of
    contents, no date parsing, no signature check)."""

    def __init__(self, km, context):
        from jupyter_client.session import Session
        import zmq

        ci = km.get_connection_info()
        self.session = Session(key=ci["key"], signature_scheme=ci["signature_scheme"])
        url = f"{ci['transport']}://{ci['ip']}"
        self.shell = context.socket(zmq.DEALER)
        self.shell.connect(f"{url}:{ci['shell_port']}")
        self.iopub = context.socket(zmq.SUB)
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.iopub.connect(f"{url}:{ci['iopub_port']}")
        self.poller = zmq.Poller()
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.iopub, zmq.POLLIN)
        self.status = None  # the last reply's status

    def drain(self):
        """Reads (and drops) what is queued on the iopub socket now."""
        while self.iopub.poll(0):
            self.iopub.recv_multipart()

    def run(self, code):
        """Seconds from an execute_request of `code` to its reply and idle status."""
        return self.request("execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})

    def request(self, msg_type, content):
        """Seconds from a shell request to its reply and idle status (`status`: the reply's)."""
        msg = self.session.msg(msg_type, content)
        mid = msg["header"]["msg_id"]
        t0 = time.perf_counter()
        self.session.send(self.shell, msg)
        reply = idle = False
        while not (reply and idle):
            ready = self.poller.poll(60_000)
            if not ready:
                raise RuntimeError(f"no answer to {msg_type} {content!r}")
            for sock, _ in ready:
                parts = sock.recv_multipart()
                i = parts.index(b"<IDS|MSG>")
                if json.loads(parts[i + 3]).get("msg_id") != mid:
                    continue
                kind = json.loads(parts[i + 2])["msg_type"]
                if sock is self.shell:
                    reply = True
                    self.status = json.loads(parts[i + 5]).get("status")
                elif kind == "status" and b'"idle"' in parts[i + 5]:
                    idle = True
        return time.perf_counter() - t0
