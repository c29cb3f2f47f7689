"""carbon-kernel's Python worker (embedded in the kernel binary, run by kernel/src/runtime/python.rs).

Wire protocol (newline-delimited JSON, one object per line):
  * commands come in on a private dup of fd 0 (fd 0 itself becomes /dev/null);
  * frames go out on a private dup of fd 3 (the kernel passes a pipe there);
  * fd 1 and fd 2 stay the user's stdout/stderr: pipes the kernel pumps, so C-level output,
    os.write and child processes are captured too.
Ordering: before every frame that must come after earlier output (display, input, done...), the
worker writes a marker "\\x00\\x1fC<token>:<seq>\\x1f" to fd 1 and fd 2 and stamps the frame with
that seq; the kernel holds the frame until the markers came through both pipes.
"""

import ast
import base64
import builtins
import codeop
import importlib.util
import io
import json
import linecache
import os
import re
import signal
import sys
import threading
import time
import traceback
import types
import uuid

# Read size of the command channel (any size works; 64 KiB = one pipe buffer on Linux, pipe(7)).
_READ_CHUNK = 65536
# A second SIGINT this soon after one that already raised is a duplicate (the kernel forwards the
# interrupt and a terminal may also signal the whole process group), not a new request.
_SIGINT_DEBOUNCE_S = 0.25


class _State:
    """Flags read by the SIGINT handler (it runs in the main thread only)."""

    executing = False  # user code runs: SIGINT raises KeyboardInterrupt
    critical = 0  # main thread is writing a frame/marker: defer the interrupt
    pending = False  # an interrupt arrived during a critical section or an input() wait
    last_raise = 0.0


_st = _State()


def _on_sigint(signum, frame):
    if _st.critical > 0:
        _st.pending = True
        return
    if not _st.executing:
        return
    now = time.monotonic()
    if now - _st.last_raise < _SIGINT_DEBOUNCE_S:
        return
    _st.last_raise = now
    raise KeyboardInterrupt


class _Critical:
    """Defers SIGINT while the main thread writes protocol bytes (a half-written frame would
    corrupt the channel); the deferred interrupt is raised on exit."""

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            _st.critical += 1

    def __exit__(self, *exc):
        if self.main:
            _st.critical -= 1
            if _st.critical == 0 and _st.pending and _st.executing:
                _st.pending = False
                _st.last_raise = time.monotonic()
                raise KeyboardInterrupt
        return False


def _json_default(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(o)).decode("ascii")
    if isinstance(o, (set, frozenset)):
        return list(o)
    return repr(o)


def _no_nan(o):
    if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
        return None
    if isinstance(o, dict):
        return {str(k): _no_nan(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_no_nan(v) for v in o]
    return o


def _dumps(obj):
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False)
    except ValueError:
        # NaN/Infinity are not JSON; Jupyter's json_clean turns them into null as well.
        return json.dumps(_no_nan(obj), default=_json_default, allow_nan=False)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Channel:
    """The protocol channel plus the ordering markers."""

    def __init__(self, fd_in, fd_out, token):
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.token = token.encode("ascii")
        self.buf = b""
        self.lock = threading.RLock()
        self.seq = 0
        self.targets = {}
        for fd in (1, 2):
            try:
                st = os.fstat(fd)
                self.targets[fd] = (st.st_dev, st.st_ino)
            except OSError:
                self.targets[fd] = None

    def send(self, obj):
        data = (_dumps(obj) + "\n").encode("utf-8")
        with _Critical(), self.lock:
            _write_all(self.fd_out, data)

    def send_ordered(self, obj):
        """Sends a frame that must follow every byte written to fd 1/2 before it."""
        for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if s is not None:
                    s.flush()
            except Exception:
                pass
        data = None
        with _Critical(), self.lock:
            self.seq += 1
            obj["seq"] = self.seq
            obj["m"] = [self._mark(1), self._mark(2)]
            data = (_dumps(obj) + "\n").encode("utf-8")
            _write_all(self.fd_out, data)

    def _mark(self, fd):
        # Only into our own pipe: if user code pointed fd 1/2 elsewhere (a file, a capture
        # library), a marker there would corrupt their data, so the frame says "no marker".
        try:
            st = os.fstat(fd)
            if self.targets.get(fd) != (st.st_dev, st.st_ino):
                return False
            _write_all(fd, b"\x00\x1fC" + self.token + b":" + str(self.seq).encode() + b"\x1f")
            return True
        except OSError:
            return False

    def recv(self):
        """The next command, or None at end of input (the kernel is gone)."""
        while b"\n" not in self.buf:
            chunk = os.read(self.fd_in, _READ_CHUNK)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line.decode("utf-8"))


_chan = None
_driver = None


# ---------------------------------------------------------------- input()


def _ask(prompt, password):
    """input() through the kernel's stdin channel."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("input() is only available from the main thread of a cell")
    prompt = "" if prompt is None else str(prompt)
    _chan.send_ordered({"t": "input", "prompt": prompt, "password": bool(password)})
    # Every input frame gets exactly one reply; an interrupt meanwhile is kept for later so the
    # reply is not left unread in the channel.
    _st.critical += 1
    try:
        while True:
            msg = _chan.recv()
            if msg is None:
                os._exit(0)
            if msg.get("op") == "input_reply":
                break
            _driver.dispatch_side(msg)
    finally:
        _st.critical -= 1
    if _st.pending or msg.get("interrupted"):
        _st.pending = False
        _st.last_raise = time.monotonic()
        raise KeyboardInterrupt
    value = msg.get("value")
    if value is None:
        raise _stdin_not_implemented()(
            "input() was called, but this front-end does not support input requests")
    return value


def _stdin_not_implemented():
    """IPython's StdinNotImplementedError (what ipykernel raises), or a twin of it."""
    try:
        from IPython.core.error import StdinNotImplementedError
    except ImportError:
        StdinNotImplementedError = type("StdinNotImplementedError", (NotImplementedError,), {})
    return StdinNotImplementedError


def _input(prompt=""):
    return _ask(prompt, False)


def _getpass(prompt="Password: ", stream=None):
    return _ask(prompt, True)


# ---------------------------------------------------------------- rich output without IPython

_REPR_METHODS = [
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
    ("application/javascript", "_repr_javascript_"),
]


def _format_plain(obj):
    """A MIME bundle (data, metadata) for obj, following IPython's _repr_*_ conventions."""
    data, md = {}, {}
    mb = getattr(obj, "_repr_mimebundle_", None)
    if callable(mb) and not isinstance(obj, type):
        try:
            r = mb(include=None, exclude=None)
            if isinstance(r, tuple):
                r, m = r
                md.update(m or {})
            data.update(r or {})
        except Exception:
            pass
    if not isinstance(obj, type):
        for mime, name in _REPR_METHODS:
            if mime in data:
                continue
            meth = getattr(obj, name, None)
            if not callable(meth):
                continue
            try:
                r = meth()
            except Exception:
                continue
            if isinstance(r, tuple) and len(r) == 2:
                r, m = r
                md[mime] = m
            if r is None:
                continue
            if isinstance(r, (bytes, bytearray)):
                r = base64.b64encode(bytes(r)).decode("ascii")
            data[mime] = r
    if "text/plain" not in data:
        try:
            data["text/plain"] = repr(obj)
        except Exception as e:
            data["text/plain"] = "<repr failed: %s: %s>" % (type(e).__name__, e)
    return data, md


class DisplayHandle:
    """What display(..., display_id=...) returns (the fallback twin of IPython's)."""

    def __init__(self, display_id=None):
        self.display_id = display_id or uuid.uuid4().hex

    def __repr__(self):
        return "<DisplayHandle display_id=%s>" % self.display_id

    def display(self, obj, **kw):
        _fallback_display(obj, display_id=self.display_id, **kw)

    def update(self, obj, **kw):
        _fallback_display(obj, display_id=self.display_id, update=True, **kw)


def _fallback_display(*objs, include=None, exclude=None, metadata=None, transient=None,
                      display_id=None, raw=False, clear=False, update=False, **kwargs):
    if clear:
        _fallback_clear_output(wait=True)
    handle = None
    if display_id is not None:
        if display_id is True:
            display_id = uuid.uuid4().hex
        handle = DisplayHandle(display_id)
    for obj in objs:
        if raw:
            data, md = dict(obj), dict(metadata or {})
        else:
            data, md = _format_plain(obj)
            md.update(metadata or {})
        _chan.send_ordered({"t": "display", "data": data, "metadata": md,
                            "display_id": display_id, "update": bool(update)})
    return handle


def _fallback_update_display(obj, *, display_id, **kw):
    kw["update"] = True
    _fallback_display(obj, display_id=display_id, **kw)


def _fallback_clear_output(wait=False):
    _chan.send_ordered({"t": "clear", "wait": bool(wait)})


# ---------------------------------------------------------------- matplotlib

_MPL_BACKEND = "_carbon_mpl_inline"

_MPL_BACKEND_SRC = '''
from matplotlib.backend_bases import _Backend, FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg


@_Backend.export
class _BackendCarbonInline(_Backend):
    FigureCanvas = FigureCanvasAgg
    FigureManager = FigureManagerBase

    @staticmethod
    def show(*args, **kwargs):
        import _carbon_driver
        _carbon_driver.flush_figures()
'''


def flush_figures():
    """Shows every open pyplot figure as PNG and closes it (after each cell, and on show())."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        import matplotlib

        if _MPL_BACKEND not in str(matplotlib.get_backend()):
            return  # the user chose another backend (e.g. %matplotlib inline)
        nums = plt.get_fignums()
    except Exception:
        return
    for num in nums:
        fig = plt.figure(num)
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", bbox_inches="tight")
        except Exception as e:
            sys.stderr.write("could not draw figure %s: %s: %s\n" % (num, type(e).__name__, e))
            continue
        _driver.display_bundle({
            "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
            "text/plain": repr(fig),
        })
    plt.close("all")


class _MplFinder:
    """Import hooks: provides the inline backend module, and selects it right after
    `import matplotlib` unless MPLBACKEND is set. (An MPLBACKEND env var would leak into child
    processes, whose python cannot import our backend.)"""

    def find_spec(self, name, path=None, target=None):
        if name == _MPL_BACKEND:
            return importlib.util.spec_from_loader(name, _SourceLoader(_MPL_BACKEND_SRC))
        if name != "matplotlib" or os.environ.get("MPLBACKEND"):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            try:
                module.rcParams["backend"] = "module://" + _MPL_BACKEND
            except Exception:
                pass

        spec.loader.exec_module = exec_module
        return spec


class _SourceLoader:
    def __init__(self, src):
        self.src = src

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(self.src, "<carbon matplotlib backend>", "exec"), module.__dict__)


# ---------------------------------------------------------------- helpers

_TOKEN_RE = re.compile(r"[A-Za-z_][\w.]*$")
# `name?` / `name??` help requests (IPython syntax) of a whole line.
_HELP_RE = re.compile(r"^[A-Za-z_%][\w.%]*\?\??$")
_NO_IPYTHON = ("this Python has no IPython (the plain Python runner takes Python only; "
               "pip install ipython in the kernel's Python for IPython's magics)")


def _token_at(code, cursor):
    """The dotted name around the cursor (for inspection)."""
    start = cursor
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] in "._"):
        start -= 1
    end = cursor
    while end < len(code) and (code[end].isalnum() or code[end] == "_"):
        end += 1
    name = code[start:end].strip(".")
    if not name:
        # inside a call: "f(1, |" -> f
        m = re.search(r"([A-Za-z_][\w.]*)\s*\([^()]*$", code[:cursor])
        if m:
            name = m.group(1)
    return name


def _indent_after(code):
    lines = code.rstrip("\n").split("\n")
    last = lines[-1] if lines else ""
    indent = len(last) - len(last.lstrip(" "))
    if last.rstrip().endswith(":"):
        indent += 4
    return " " * indent


def _fallback_is_complete(code):
    try:
        r = codeop.compile_command(code, "<input>", "exec")
    except (SyntaxError, OverflowError, ValueError):
        return "invalid", ""
    if r is None:
        return "incomplete", _indent_after(code)
    # compile_command says a block is complete without its final blank line: keep it open.
    last = code.rstrip("\n").split("\n")[-1]
    if not code.endswith("\n\n") and (last.startswith((" ", "\t")) or last.rstrip().endswith(":")):
        return "incomplete", _indent_after(code)
    return "complete", ""


# ---------------------------------------------------------------- the two engines


class PlainEngine:
    """Standard library only: exec the body, eval the last expression."""

    def __init__(self):
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = self.module
        self.ns = self.module.__dict__
        self.count = 0
        builtins.display = _fallback_display
        builtins.update_display = _fallback_update_display
        builtins.clear_output = _fallback_clear_output

    def run(self, code):
        self.count += 1
        filename = "<cell-%d>" % self.count
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        result = error = None
        try:
            tree = ast.parse(code, filename, "exec")
        except (SyntaxError, ValueError, OverflowError) as e:
            return None, self.foreign_syntax(code) or self._error(e, None)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        _st.executing = True
        try:
            exec(compile(tree, filename, "exec"), self.ns)
            if last is not None:
                value = eval(compile(last, filename, "eval"), self.ns)
                if value is not None and not code.rstrip().endswith(";"):
                    self.ns["_"] = value
                    data, md = _format_plain(value)
                    result = {"data": data, "metadata": md}
        except BaseException as e:  # user code: KeyboardInterrupt and SystemExit included
            _st.executing = False
            error = self._error(e, e.__traceback__.tb_next if e.__traceback__ else None)
        finally:
            _st.executing = False
        try:
            flush_figures()
        except BaseException as e:
            error = error or self._error(e, None)
        return result, error

    def _error(self, e, tb):
        te = traceback.TracebackException(type(e), e, tb)
        lines = list(te.format())
        return {"ename": type(e).__name__, "evalue": str(e), "traceback": lines}

    def complete(self, code, cursor):
        import rlcompleter

        m = _TOKEN_RE.search(code[:cursor])
        if not m:
            return [], cursor, cursor
        text = m.group(0)
        comp = rlcompleter.Completer(self.ns)
        out = []
        for i in range(1000):
            try:
                c = comp.complete(text, i)
            except Exception:
                break
            if c is None:
                break
            c = c.rstrip("(")
            if c not in out:
                out.append(c)
        return out, m.start(), cursor

    def inspect(self, code, cursor, detail):
        import inspect as _inspect

        name = _token_at(code, cursor)
        if not name:
            return None
        try:
            obj = eval(name, self.ns)
        except Exception:
            return None
        parts = ["Type:      %s" % type(obj).__name__]
        try:
            parts.append("String form: %s" % repr(obj)[:200])
        except Exception:
            pass
        try:
            parts.append("Signature: %s%s" % (name, _inspect.signature(obj)))
        except (TypeError, ValueError):
            pass
        doc = _inspect.getdoc(obj)
        if doc:
            parts.append("Docstring:\n" + doc)
        if detail and callable(obj):
            try:
                parts.append("Source:\n" + _inspect.getsource(obj))
            except (OSError, TypeError):
                pass
        return {"text/plain": "\n".join(parts)}

    def is_complete(self, code):
        return _fallback_is_complete(code)

    def pager(self):
        return None

    def magics(self):
        return None

    def foreign_syntax(self, code):
        """The first IPython-only line of code that does not parse (`%magic`, `!cmd`, `obj?`),
        as an error, or None: the user reads why, not a SyntaxError."""
        for line in code.splitlines():
            s = line.strip()
            if line.startswith("%") or s.startswith("!") or s.startswith("?") or (
                    s.endswith("?") and _HELP_RE.match(s)):
                word = s.split()[0] if s.split() else s
                return {"ename": "UsageError",
                        "evalue": "%s needs IPython, and %s" % (word, _NO_IPYTHON),
                        "traceback": ["\x1b[0;31mUsageError: %s needs IPython, and %s\x1b[0m"
                                      % (word, _NO_IPYTHON)]}
        return None


# How long a completion waits for jedi before answering with IPython's own completer. jedi's
# first answers took 2.4 s (`os.pa`) and 7.5 s (`é = my_v`) here on a loaded 2-core machine
# (measured, IPython 9 / jedi 0.19), past the kernel's 5 s bound on a completion; once warm it
# answers in tens of ms. 4 s leaves 1 s of the kernel's 5 s bound (SIDE_TIMEOUT in python.rs)
# for IPython's own answer and the way back. CARBON_JEDI_BUDGET_S changes it (0: never wait).
try:
    _JEDI_BUDGET_S = max(0.0, float(os.environ.get("CARBON_JEDI_BUDGET_S", "4")))
except ValueError:
    _JEDI_BUDGET_S = 4.0


class _JediBudget:
    """IPython's completer with jedi (what ipykernel uses: it reads `import x; x.` before `x`
    exists) in a thread, within _JEDI_BUDGET_S. Too slow, or still busy with an earlier
    request: None, and the caller answers without jedi; the late computation finishes in the
    background, so jedi is warm for the next Tab. Runs only on demand (never during a cell
    unprompted: the meter would count its CPU time to that cell)."""

    def __init__(self, shell):
        self.shell = shell
        self.completer = None
        self.busy = threading.Lock()
        self.enabled = True

    def _get(self):
        if self.completer is None:
            from IPython.core.completer import IPCompleter

            c = IPCompleter(shell=self.shell, namespace=self.shell.user_ns,
                            global_namespace=self.shell.user_global_ns, parent=self.shell)
            c.use_jedi = True
            # the shell's `import x`, `%run`, `%cd` … completers (InteractiveShell.init_completer)
            c.custom_completers = self.shell.Completer.custom_completers
            self.completer = c
        return self.completer

    def complete(self, code, cursor):
        if not self.enabled or not self.busy.acquire(blocking=False):
            return None
        box = {}
        done = threading.Event()

        def work():
            from IPython.core.completer import provisionalcompleter

            try:
                import jedi  # noqa: F401  (its import is part of the first, slow answer)
            except ImportError:  # no jedi: IPython's completer alone, as IPython does
                self.enabled = False
                self.busy.release()
                done.set()
                return
            try:
                with provisionalcompleter():
                    box["comps"] = list(self._get().completions(code, cursor))
            except Exception:  # jedi failing on odd code: IPython's completer answers
                pass
            finally:
                self.busy.release()
                done.set()

        threading.Thread(target=work, name="carbon-jedi", daemon=True).start()
        if done.wait(_JEDI_BUDGET_S):
            return box.get("comps")
        return None


class IPythonEngine:
    """IPython's InteractiveShell, with its display machinery pointed at the channel."""

    def __init__(self):
        from IPython.core import page, payloadpage
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        engine = self

        class CarbonDisplayPublisher(DisplayPublisher):
            def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                        **kwargs):
                display_id = (transient or {}).get("display_id")
                _chan.send_ordered({"t": "display", "data": data, "metadata": metadata or {},
                                    "display_id": display_id, "update": bool(update)})

            def clear_output(self, wait=False):
                _chan.send_ordered({"t": "clear", "wait": bool(wait)})

        class CarbonDisplayHook(DisplayHook):
            def start_displayhook(self):
                pass

            def write_output_prompt(self):
                pass

            def write_format_data(self, format_dict, md_dict=None):
                engine.result = {"data": format_dict, "metadata": md_dict or {}}

            def finish_displayhook(self):
                pass

        class CarbonShell(InteractiveShell):
            display_pub_class = CarbonDisplayPublisher
            displayhook_class = CarbonDisplayHook

            def _showtraceback(self, etype, evalue, stb):
                engine.error = {
                    "ename": getattr(etype, "__name__", str(etype)),
                    "evalue": str(evalue),
                    "traceback": list(stb),
                }

            def show_usage_error(self, exc):
                # IPython prints "UsageError: ..." on stderr and fails the cell; the cell's
                # error carries it instead (ename UsageError, as the kernel's own magics).
                engine.error = {
                    "ename": "UsageError",
                    "evalue": str(exc),
                    "traceback": ["\x1b[0;31mUsageError: %s\x1b[0m" % exc],
                }

            def ask_exit(self):
                # exit()/quit(): end this worker after the cell; the kernel starts a fresh one.
                engine.exit_requested = True

            def enable_gui(self, gui=None):
                if gui not in (None, "inline"):
                    raise NotImplementedError("GUI event loops are not available in carbon-kernel")

        cfg = Config()
        # In-memory history: several kernels may run at once, and the kernel answers
        # history_request itself.
        cfg.HistoryManager.hist_file = ":memory:"
        # The shell's own completer runs without jedi (about a millisecond); jedi's answer, as
        # ipykernel gives it, comes from a second completer within a time budget (_JediBudget).
        cfg.IPCompleter.use_jedi = False
        self.shell = CarbonShell.instance(config=cfg)
        try:
            self.shell.colors = "Linux"  # the scheme ipykernel's tracebacks use
        except Exception:
            pass
        # obj? / %magic? go to the pager payload, as in ipykernel.
        self.shell.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)
        self.shell.events.register("post_execute", flush_figures)
        self.result = None
        self.error = None
        self.exit_requested = False
        from IPython.core.inputtransformer2 import TransformerManager

        self.tm = TransformerManager()
        self.jedi = _JediBudget(self.shell)

    def run(self, code):
        self.result = None
        self.error = None
        _st.executing = True
        try:
            res = self.shell.run_cell(code, store_history=True, silent=False)
            ok = res.success
        except KeyboardInterrupt:
            ok = False
            self.error = {"ename": "KeyboardInterrupt", "evalue": "",
                          "traceback": ["\x1b[0;31mKeyboardInterrupt\x1b[0m"]}
        finally:
            _st.executing = False
        if not ok and self.error is None:
            self.error = {"ename": "Error", "evalue": "the cell failed", "traceback": []}
        return (self.result, self.error if not ok else None)

    def pager(self):
        pm = getattr(self.shell, "payload_manager", None)
        if pm is None:
            return None
        payloads = pm.read_payload()
        pm.clear_payload()
        for p in payloads:
            if p.get("source") == "page":
                return p.get("data")
        return None

    def complete(self, code, cursor):
        from IPython.core.completer import provisionalcompleter

        comps = self.jedi.complete(code, cursor)
        if comps is None:
            with provisionalcompleter():
                comps = list(self.shell.Completer.completions(code, cursor))
        if not comps:
            return [], cursor, cursor
        # One replacement range for all (what ipykernel's _rectify_completions does).
        start = min(c.start for c in comps)
        end = max(c.end for c in comps)
        out = []
        for c in comps:
            t = code[start:c.start] + c.text + code[c.end:end]
            if t not in out:
                out.append(t)
        return out, start, end

    def inspect(self, code, cursor, detail):
        from IPython.utils.tokenutil import token_at_cursor

        name = token_at_cursor(code, cursor)
        if not name:
            return None
        try:
            return self.shell.object_inspect_mime(name, detail_level=detail)
        except KeyError:
            return None

    def is_complete(self, code):
        status, indent = self.tm.check_complete(code)
        return status, (" " * indent if indent else "")

    def magics(self):
        listing = str(self.shell.run_line_magic("lsmagic", ""))
        return "IPython's magics (python cells):\n" + listing


# ---------------------------------------------------------------- main loop


class Driver:
    def __init__(self, engine):
        self.engine = engine

    def display_bundle(self, data):
        _chan.send_ordered({"t": "display", "data": data, "metadata": {}, "display_id": None,
                            "update": False})

    def dispatch_side(self, msg):
        """Requests that may arrive while a cell waits for input()."""
        op = msg.get("op")
        rid = msg.get("id")
        try:
            if op == "complete":
                matches, start, end = self.engine.complete(msg["code"], msg["cursor"])
                _chan.send({"t": "reply", "id": rid, "matches": matches, "start": start, "end": end})
            elif op == "inspect":
                data = self.engine.inspect(msg["code"], msg["cursor"], msg.get("detail", 0))
                _chan.send({"t": "reply", "id": rid, "found": data is not None, "data": data or {}})
            elif op == "is_complete":
                status, indent = self.engine.is_complete(msg["code"])
                _chan.send({"t": "reply", "id": rid, "status": status, "indent": indent})
            elif op == "magics":
                text = self.engine.magics()
                if text is None:
                    _chan.send({"t": "reply", "id": rid, "error": _NO_IPYTHON})
                else:
                    _chan.send({"t": "reply", "id": rid, "text": text})
            elif op == "execute":
                _chan.send_ordered({"t": "done", "id": rid, "status": "error", "result": None,
                                    "error": {"ename": "RuntimeError", "evalue": "busy",
                                              "traceback": ["a cell is already running"]}})
            else:
                _chan.send({"t": "reply", "id": rid, "error": "unknown op %r" % op})
        except Exception as e:  # a failed completion must never take the worker down
            _chan.send({"t": "reply", "id": rid, "error": "%s: %s" % (type(e).__name__, e)})

    def execute(self, msg):
        result, error = self.engine.run(msg["code"])
        pager = None
        try:
            pager = self.engine.pager()
        except Exception:
            pass
        exit_requested = bool(getattr(self.engine, "exit_requested", False))
        _chan.send_ordered({"t": "done", "id": msg.get("id"),
                            "status": "error" if error else "ok",
                            "result": result, "error": error, "pager": pager,
                            "exit": exit_requested})
        return exit_requested

    def loop(self):
        while True:
            try:
                msg = _chan.recv()
            except KeyboardInterrupt:
                continue
            if msg is None:
                return
            if msg.get("op") == "execute":
                try:
                    if self.execute(msg):
                        return
                except KeyboardInterrupt:
                    # Arrived after the cell's own handling; the cell still needs its reply.
                    _chan.send_ordered({"t": "done", "id": msg.get("id"), "status": "error",
                                        "result": None, "pager": None,
                                        "error": {"ename": "KeyboardInterrupt", "evalue": "",
                                                  "traceback": ["KeyboardInterrupt"]}})
            elif msg.get("op") == "input_reply":
                continue  # a late answer to an input() that is gone
            else:
                self.dispatch_side(msg)


def main():
    global _chan, _driver
    token = os.environ.pop("CARBON_MARKER_TOKEN", "")
    fd_in = os.dup(0)  # os.dup makes non-inheritable fds (PEP 446): children never see them
    fd_out = os.dup(3)
    os.close(3)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _chan = Channel(fd_in, fd_out, token)
    sys.argv = [""]  # as in the interactive interpreter (not "-c")
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        import faulthandler

        faulthandler.enable(file=sys.__stderr__)  # a segfault shows where it happened
    except Exception:
        pass
    sys.meta_path.insert(0, _MplFinder())
    builtins.input = _input
    import getpass

    getpass.getpass = _getpass
    ipython = None
    warning = None
    try:
        engine = IPythonEngine()
        import IPython

        ipython = IPython.__version__
    except ImportError:
        engine = None
    except Exception as e:  # a broken IPython install: run without it, and say so
        engine = None
        warning = "IPython failed to start (%s: %s); using the plain Python runner" % (
            type(e).__name__, e)
    if engine is None:
        engine = PlainEngine()
    builtins.input = _input  # IPython may have replaced it
    _driver = Driver(engine)
    _chan.send({"t": "ready", "version": "%d.%d.%d" % sys.version_info[:3], "ipython": ipython,
                "executable": sys.executable, "pid": os.getpid(), "warning": warning})
    _driver.loop()
