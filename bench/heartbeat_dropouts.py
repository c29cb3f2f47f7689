"""Heartbeat drop-outs (issue 13 item 7): start a kernel, then hammer its heartbeat with clients
that connect and leave in the middle of a ping (a REQ that sends and closes, a raw TCP client
that sends half a ZMTP greeting); every 500 of them check that a well-behaved client still gets
its pong, and count the heartbeat sockets left in CLOSE-WAIT.

    python bench/heartbeat_dropouts.py target/debug/carbon-kernel 3000
    python bench/heartbeat_dropouts.py ipykernel 3000

Before the ROUTER heartbeat, 2 kernels in 4 died this way (13 and 31 sockets in CLOSE-WAIT);
after it, 6 in 6 stayed alive with none."""
import random, json, os, socket, subprocess, sys, tempfile, time, uuid, zmq
binary = sys.argv[1] if sys.argv[1] == "ipykernel" else os.path.abspath(sys.argv[1]); n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
d = tempfile.mkdtemp()
ci = dict(transport="tcp", ip="127.0.0.1", shell_port=free(), iopub_port=free(), stdin_port=free(),
          control_port=free(), hb_port=free(), key=str(uuid.uuid4()), signature_scheme="hmac-sha256", kernel_name="carbon")
cf = os.path.join(d, "c.json"); json.dump(ci, open(cf, "w"))
args = [binary, "run", "--connection-file", cf] if "carbon" in binary else [sys.executable, "-m", "ipykernel_launcher", "-f", cf]
k = subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=d)
ctx = zmq.Context()
url = f"tcp://127.0.0.1:{ci['hb_port']}"
def ping(timeout=2.0):
    s = ctx.socket(zmq.REQ); s.linger = 0; s.connect(url); s.send(b"ping")
    ok = s.poll(int(timeout * 1000)); s.close(); return bool(ok)
t = time.time()
while not ping(0.5):
    if time.time() - t > 30: print("never answered"); k.kill(); sys.exit(2)
dead_at = None
for i in range(n):
    mode = i % 3
    if mode == 0:
        s = ctx.socket(zmq.REQ); s.linger = 0; s.connect(url); s.send(b"ping"); time.sleep(random.random() * 0.002); s.close()
    elif mode == 1:
        r = socket.create_connection(("127.0.0.1", ci["hb_port"])); r.send(b"\xff" + b"\0" * 8 + b"\x7f\x03"); time.sleep(random.random() * 0.001); r.close()
    else:
        s = ctx.socket(zmq.REQ); s.linger = 0; s.connect(url); s.send(b"ping"); s.poll(1); s.close()
    if i % 500 == 499 and not ping():
        dead_at = i; break
alive = ping(3.0) if dead_at is None else False
cw = subprocess.run(["sh", "-c", f"ss -tan | grep ':{ci['hb_port']}' | grep -c CLOSE-WAIT"], capture_output=True, text=True).stdout.strip()
print(f"{'ALIVE' if alive else 'DEAD at %s' % dead_at} after {n} drop-outs; CLOSE-WAIT sockets: {cw}")
k.kill(); k.wait()
