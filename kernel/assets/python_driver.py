"""carbon-kernel's Python worker (embedded in the kernel binary, run by kernel/src/runtime/python.rs).

Wire protocol (newline-delimited JSON, one object per line):
  * commands come in on a private dup of fd 0 (fd 0 itself becomes /dev/null);
  * frames go out on a private dup of fd 3 (the kernel passes a pipe there), a cell's "done"
    on a private dup of fd 4 (a second pipe, which the kernel's executor waits on itself; with
    "after": the number of ordered frames written to fd 3 before it, which it must not overtake);
  * fd 1 and fd 2 stay the user's stdout/stderr: pipes the kernel pumps, so C-level output,
    os.write and child processes are captured too.
Ordering: before every frame that must come after earlier output (display, input...), the
worker writes a marker "\\x00\\x1fC<token>:<seq>\\x1f" to fd 1 and fd 2 and stamps the frame with
that seq; the kernel holds the frame until the markers came through both pipes. A cell's "done"
is stamped "sync" instead: the kernel holds it until its pipe readers hold nothing unread.
"""

import ast
import base64
import builtins
import codeop
import importlib.util
import io
import json
import keyword
import linecache
import os
import re
import select
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

    def __init__(self, fd_in, fd_out, token, fd_done=None):
        self.fd_in = fd_in
        self.fd_out = fd_out
        # A cell's "done" goes on a pipe of its own that the kernel's executor waits on (no
        # reader thread wakes at a cell's end), saying how many ordered frames went to fd_out
        # before it ("after"), so that it cannot overtake them.
        self.fd_done = fd_done
        self.ordered = 0
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
        """Sends a frame that must follow every byte written to fd 1/2 before it.

        A cell's "done" goes without markers, as "sync": nothing the cell writes after it is
        the cell's, so the kernel only needs to see both pipes read up to the frame (it asks
        its readers), and the cell's end wakes no reader thread."""
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
            if obj.get("t") == "done":
                obj["m"] = [False, False]
                obj["sync"] = True
                if self.fd_done is not None:
                    obj["after"] = self.ordered
                    _write_all(self.fd_done, (_dumps(obj) + "\n").encode("utf-8"))
                    return
            else:
                obj["m"] = [self._mark(1), self._mark(2)]
            data = (_dumps(obj) + "\n").encode("utf-8")
            _write_all(self.fd_out, data)
            self.ordered += 1

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

    def wait_command(self, other_fd):
        """Waits until a command can be read (True) or `other_fd` is readable (False)."""
        if b"\n" in self.buf:
            return True
        readable, _, _ = select.select([self.fd_in, other_fd], [], [])
        return self.fd_in in readable

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
    # IPython leaves frames with this local out of a user's traceback: the error points at
    # the cell's `input()`, not into the driver (as ipykernel's own frames are left out)
    __tracebackhide__ = True  # noqa: F841
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
            "%s was called, but this front-end does not support input requests"
            % ("getpass()" if password else "input()"))
    return value


def _stdin_not_implemented():
    """IPython's StdinNotImplementedError (what ipykernel raises), or a twin of it."""
    try:
        from IPython.core.error import StdinNotImplementedError
    except ImportError:
        StdinNotImplementedError = type("StdinNotImplementedError", (NotImplementedError,), {})
    return StdinNotImplementedError


def _input(prompt=""):
    __tracebackhide__ = True  # noqa: F841 (see _ask)
    return _ask(prompt, False)


def _getpass(prompt="Password: ", stream=None):
    __tracebackhide__ = True  # noqa: F841 (see _ask)
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


def _inline_backend():
    """The backend a fresh `import matplotlib` gets: matplotlib_inline's, as under ipykernel
    (which sets it through MPLBACKEND), when IPython's shell runs and matplotlib_inline is
    importable: loading it configures the shell as ipykernel's (the cell's figures shown after
    it, a `Figure` value shown as an image, `%config InlineBackend` options such as
    `figure_formats`). Else the driver's own (no IPython: the plain runner)."""
    try:
        ip = sys.modules.get("IPython")
        if (ip is not None and ip.get_ipython() is not None
                and importlib.util.find_spec("matplotlib_inline") is not None):
            return "module://matplotlib_inline.backend_inline"
    except Exception:
        pass
    return "module://" + _MPL_BACKEND


def _figures_pending():
    """Whether pyplot holds open figures, which the end of the cell will show."""
    plt = sys.modules.get("matplotlib.pyplot")
    try:
        return plt is not None and bool(plt.get_fignums())
    except Exception:
        return False


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
                module.rcParams["backend"] = _inline_backend()
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
    """Standard library only: exec the body, eval the last expression. Also runs the first cells
    while IPython is still being imported, when IPython would give the same result (see
    _plan_early and run_early); IPython's shell then takes over this module."""

    def __init__(self, doc=None):
        self.orig_main = sys.modules.get("__main__")
        self.module = types.ModuleType("__main__", doc)
        self.module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = self.module
        self.ns = self.module.__dict__
        self.count = 0
        self.install_builtins()

    def install_builtins(self):
        builtins.display = _fallback_display
        builtins.update_display = _fallback_update_display
        builtins.clear_output = _fallback_clear_output

    def run(self, code, store_history=True, silent=False):
        # (no history here; a silent cell shows no value and leaves `_`, as IPython's)
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
                if value is not None and not silent and not code.rstrip().endswith(";"):
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

    def run_early(self, plan, on_error, on_value):
        """Runs a cell before IPython is in, as IPython's run_cell would run it (see
        `_plan_early`): node by node, under IPython's name for the cell; (result, error). An
        exception is formatted by `on_error()` inside the `except` below, where `sys.exc_info()`
        is what IPython's run_code sees at that point (the traceback starts at this frame as it
        starts at run_code's; IPythonEngine.show_exception leaves it out); a last value that is
        not None goes to `on_value(value)`."""
        __tracebackhide__ = "__ipython_bottom__"  # as run_code, for %debug / %tb later
        linecache.cache[plan.name] = (len(plan.cell), None,
                                      [line + "\n" for line in plan.cell.splitlines()], plan.name)
        value = error = None
        _st.executing = True
        try:
            for code in plan.codes:
                exec(code, self.ns, self.ns)
            if plan.last is not None:
                value = eval(plan.last, self.ns, self.ns)
        except BaseException as e:  # user code: KeyboardInterrupt and SystemExit included
            _st.executing = False
            if isinstance(e, KeyboardInterrupt):
                # Handled: the kernel must not take the wait for IPython (to show it) for a
                # worker that ignores interrupts.
                _chan.send({"t": "interrupted"})
            error = on_error()
        finally:
            _st.executing = False
        if error is not None:
            return None, error
        # run_ast_nodes' tail (softspace(sys.stdout, 0)), for the attribute it leaves
        try:
            sys.stdout.softspace = 0
        except Exception:
            pass
        if value is None:
            return None, None
        return on_value(value)

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

    def payloads(self):
        return None, None

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


# ---------------------------------------------------------------- the first cells, before IPython

# IPython's import takes 0.2-0.5 s (measured 215-291 ms warm, IPython 9.18), most of a fresh
# kernel's "start -> first result" (issue 9). The worker says ready at once and imports IPython on a
# thread; a cell that comes meanwhile runs on the plain runner only if IPython would give the very
# same result (below), else it waits for the import. Whatever is not listed here waits.

# The doc string IPython gives the module it creates for the user (prepare_user_module).
_IPYTHON_MODULE_DOC = "Automatically created module for IPython interactive environment"

# Names whose meaning differs before IPython is in: what IPython puts into the namespace and
# builtins (init_user_ns, init_builtins, the output cache), and what looks at the namespace, the
# interpreter or the input channel.
_EARLY_NAMES = frozenset((
    "In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii", "_", "__", "___", "_exit_code",
    "get_ipython", "exit", "quit", "open", "display", "update_display", "clear_output",
    "__IPYTHON__", "__builtin__", "__builtins__", "__doc__", "__main__",
    "globals", "locals", "vars", "dir", "eval", "exec", "compile", "help", "breakpoint",
    "input", "__import__", "setattr", "delattr", "getattr", "hasattr",
    # IPython prints exception groups with the standard library, through its own frames
    "ExceptionGroup", "BaseExceptionGroup",
))
_EARLY_NAME_RE = re.compile(r"_i?\d+$|_+$|_i+$")
# Attributes IPython sets or that show the interpreter's own frames and hooks.
_EARLY_ATTRS = frozenset((
    "displayhook", "excepthook", "ps1", "ps2", "ps3", "modules", "last_type", "last_value",
    "last_traceback", "last_exc", "_getframe", "_current_frames", "settrace", "setprofile",
    "gettrace", "getprofile", "getswitchinterval", "setswitchinterval", "chdir", "fchdir",
    "f_back", "get_ipython",
))
# Attributes that must not be replaced (IPython saves them when its shell starts).
_EARLY_STORE_ATTRS = frozenset(("stdout", "stderr", "stdin", "path"))
# Standard-library modules that see the difference (IPython's own, threads, atexit order,
# warning filters, frames, the import system); other modules than the standard library's wait too
# (a library may check for IPython when it is imported).
_EARLY_MODULES = frozenset((
    "IPython", "__future__", "__main__", "builtins", "importlib", "atexit", "warnings",
    "threading", "_thread", "multiprocessing", "concurrent", "asyncio", "inspect", "traceback",
    "pdb", "bdb", "code", "codeop", "pydoc", "doctest", "site", "gc", "tracemalloc",
    "faulthandler", "signal", "readline", "rlcompleter", "runpy", "getpass", "ctypes", "gettext",
    # a SyntaxError raised by user code is shown with the frame that ran it (IPython's run_code)
    "ast", "symtable", "tokenize", "py_compile", "compileall",
))
# IPython's prefilter split of a line (IPython.core.splitinput.line_split, without escapes).
_LINE_SPLIT_RE = re.compile(r"^\s*(%{0,2}[\w.*]*)(.*?$|$)")
# Lines IPython may transform (escapes, help, prompts); a cell with one waits, even inside a string.
_IPYTHON_LINE_RE = re.compile(r"^\s*([%!?/,;]|>>>)|\?\s*$")
_PROMPT_RE = re.compile(r"^(\[nav\] |\[ins\] )?In \[\d+\]: |^\s*\.{3,}:")


# Frames between IPythonEngine.run and the cell's code in IPython's run_cell (run_cell, _run_cell,
# the sync runner, run_cell_async, run_ast_nodes, run_code) beyond run_early's one: an early cell
# runs as deep in the stack, so it meets the recursion limit at the same depth (measured: a
# recursive function reached 985 levels under IPython 9.18 / Python 3.11, 992 under run_early).
_RUN_CELL_DEPTH = 7


def _deeper(n, fn):
    """fn() called `n` frames deeper."""
    return _deeper(n - 1, fn) if n > 0 else fn()


class _EarlyPlan:
    """A cell ready to run before IPython is in: its IPython number and name, the cell as IPython
    transforms it, one compiled code per top-level statement, and the last one's expression
    (IPython's displayhook shows its value) or None. A cell the kernel counted that did not run
    here (`Driver.count_unrun`) is one without a name or code."""

    def __init__(self, number, raw, cell, name, codes, last):
        # The request's flags (Driver.run_cell sets them). store: the cell counts and enters the
        # history (`store_history`); one that does not still has its number (the next count, as
        # IPython names it) for tracebacks.
        self.store = True
        self.silent = False
        self.number = number
        self.raw = raw
        self.cell = cell
        self.name = name
        self.codes = codes
        self.last = last


def _plan_early(code, number, ns):
    """An `_EarlyPlan` if IPython would run `code` as plain Python with no output of its own (no
    displayhook result), else None (the cell waits for IPython). Mirrors IPython 8/9's
    run_cell: transform_cell (a final newline, leading blank lines dropped, common indentation
    removed), the one-line prefilter, ast_parse, then each top-level node compiled on its own
    with its codeop.Compile flags (autoawait on: a coroutine cell needs IPython's runner)."""
    lines = code.splitlines()
    if any(_IPYTHON_LINE_RE.search(line) for line in lines):
        return None
    if any(_PROMPT_RE.match(line) for line in lines[:2]):
        return None
    cell = code if code.endswith("\n") else code + "\n"
    kept = cell.splitlines(True)
    for i, line in enumerate(kept):
        if line and not line.isspace():
            kept = kept[i:]
            break
    cell = "".join(kept)
    body = cell.splitlines()
    if any(line.isspace() for line in body) or not any(line[:1].strip() for line in body):
        import textwrap  # (only when it changes something: ~2 ms on the first cell's path)

        cell = textwrap.dedent(cell)
    if len(cell.splitlines()) == 1:
        # IPython's prefilter (one-line cells only): an assignment, or a first name that a
        # keyword, a builtin or a user variable shadows, is Python; else it may be an automagic
        # (`ls`, `who`, `cd x`: its checkers in priority order, IPython.core.prefilter).
        m = _LINE_SPLIT_RE.match(cell.rstrip("\n"))
        if not m:
            return None
        head = m.group(1).split(".", 1)[0]
        if not (m.group(2).lstrip()[:1] in ("=", ",") or keyword.iskeyword(head)
                or head in ns or head in builtins.__dict__):
            return None
    comp = codeop.Compile()
    comp.flags |= getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    name = "<ipython-input-%d-%s>" % (number, _sha1_hex(cell.encode("utf-8"))[:12])
    try:
        tree = compile(cell, name, "exec", comp.flags | ast.PyCF_ONLY_AST, True)
    except Exception:
        return None
    if not _early_names_ok(tree):
        return None
    nodes = tree.body
    last = nodes[-1] if nodes and isinstance(nodes[-1], ast.Expr) else None
    codes = []
    try:
        for node in nodes[:-1] if last is not None else nodes:
            codes.append(comp(ast.Module([node], []), name, "exec"))
        if last is not None:
            # IPython compiles it in "single" mode: the same evaluation, then displayhook(value),
            # which does nothing for None (print(...)); another value waits for IPython.
            last = comp(ast.Expression(last.value), name, "eval")
    except Exception:
        return None  # IPython would run the nodes before this one first
    if any(c.co_flags & 0x80 for c in codes + [last] if c is not None):
        return None  # inspect.CO_COROUTINE: top-level await, for IPython's runner
    return _EarlyPlan(number, code, cell, name, codes, last)


def _sha1_hex(data):
    """IPython's cell-name hash (compilerop.code_name); _sha1 spares hashlib's OpenSSL load."""
    try:
        import _sha1

        return _sha1.sha1(data).hexdigest()
    except ImportError:
        import hashlib

        return hashlib.sha1(data).hexdigest()


def _early_names_ok(tree):
    """No name, attribute, string or import in `tree` is one whose behaviour IPython changes."""
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        return False  # Python < 3.10: no list of the standard library
    for node in ast.walk(tree):
        names = ()
        if isinstance(node, ast.Name):
            names = (node.id,)
        elif isinstance(node, ast.Attribute):
            if node.attr in _EARLY_ATTRS:
                return False
            if not isinstance(node.ctx, ast.Load) and node.attr in _EARLY_STORE_ATTRS:
                return False
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = (node.name,)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names = tuple(node.names)
        elif isinstance(node, ast.ExceptHandler):
            names = (node.name,) if node.name else ()
        elif type(node).__name__ in ("MatchAs", "MatchStar"):
            names = (node.name,) if node.name else ()
        elif type(node).__name__ == "MatchMapping":
            names = (node.rest,) if node.rest else ()
        elif type(node).__name__ == "TryStar":  # except*: exception groups, as above
            return False
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in _EARLY_ATTRS or node.value == "IPython":  # hasattr(sys, "ps1")...
                return False
        elif isinstance(node, ast.Import):
            for a in node.names:
                if not _early_module_ok(a.name, stdlib):
                    return False
                names += (a.asname or a.name.split(".")[0],)
        elif isinstance(node, ast.ImportFrom):
            if node.level or not _early_module_ok(node.module or "", stdlib):
                return False
            for a in node.names:
                if a.name == "*" or a.name in _EARLY_ATTRS or a.name in _EARLY_MODULES:
                    return False
                names += (a.name, a.asname or a.name)
        for n in names:
            if n in _EARLY_NAMES or n in _EARLY_MODULES or _EARLY_NAME_RE.match(n):
                return False
    return True


def _early_module_ok(dotted, stdlib):
    parts = dotted.split(".")
    return parts[0] in stdlib and not any(p in _EARLY_MODULES for p in parts)


class _IPythonLoader:
    """Imports IPython on a thread. Importing only: the shell is built on the main thread,
    between cells, where the module's namespace is not in use and signals work."""

    def __init__(self):
        self.done = threading.Event()
        self.error = None
        # The import thread writes a byte here when it is done, so the idle main loop can switch.
        self.wake_r, self.wake_w = os.pipe()
        t = threading.Thread(target=self._run, name="carbon-ipython-import", daemon=True)
        t.start()

    def _run(self):
        try:
            import IPython  # noqa: F401
            from IPython.core import (  # noqa: F401
                completer, displayhook, displaypub, inputtransformer2, interactiveshell, page,
                payloadpage, ultratb)
            from IPython.utils import tokenutil  # noqa: F401
            from traitlets.config import Config  # noqa: F401
        except BaseException as e:
            self.error = e
        finally:
            try:
                os.write(self.wake_w, b"!")
            except OSError:
                pass
            self.done.set()  # after the write: the main thread closes the pipe once done

    def close(self):
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _ipython_installed():
    try:
        return importlib.util.find_spec("IPython") is not None
    except Exception:
        return False


def _venv_matches():
    """IPython's shell adds $VIRTUAL_ENV's site-packages to sys.path when this python is not that
    environment's (init_virtualenv); cells run before that would import from elsewhere."""
    venv = os.environ.get("VIRTUAL_ENV")
    if not venv:
        return True
    try:
        return os.path.realpath(sys.prefix) == os.path.realpath(venv)
    except Exception:
        return False


def _warn_as_run_code(message):
    """warnings.warn(message, stacklevel=1) as InteractiveShell.run_code calls it: the same
    location in the text, the same once-per-location registry."""
    import inspect
    import warnings

    try:
        from IPython.core import interactiveshell as mod

        src, first = inspect.getsourcelines(mod.InteractiveShell.run_code)
        lineno = next(first + i for i, line in enumerate(src) if message[:8] in line)
    except Exception:
        warnings.warn(message, stacklevel=1)  # same text, another location
        return
    warnings.warn_explicit(message, UserWarning, mod.__file__, lineno, module=mod.__name__,
                           registry=mod.__dict__.setdefault("__warningregistry__", {}),
                           module_globals=mod.__dict__)


# IPython's `InteractiveShellApp.default_extensions` (IPython 8 and 9), which ipykernel loads;
# loaded here too when the shell is built without IPython's application (_shell_app failed).
_DEFAULT_EXTENSIONS = ("storemagic",)

# The values of InteractiveShell.ast_node_interactivity for which IPython's displayhook may show
# more than one value in a cell ("last_expr", the default, and "last_expr_or_assign" show the
# last expression's at most; "none" none).
_EVERY_VALUE = ("all", "last")

# The configuration files ipykernel's application reads (BaseIPythonApplication.load_config_file:
# ipython_config, then its own), each as .py and .json.
_CONFIG_BASES = ("ipython_config", "ipython_kernel_config")


def _ipython_dir():
    """IPython's directory as IPython.paths.get_ipython_dir finds it, without importing IPython."""
    d = os.environ.get("IPYTHONDIR") or os.environ.get("IPYTHON_DIR")
    return d or os.path.join(os.path.expanduser("~"), ".ipython")


def _profile_customized():
    """Whether the start of IPython's shell as ipykernel starts it reads a configuration or runs
    code of the user's: $PYTHONSTARTUP, a config file in the default profile or in IPython's
    system folders, a `.py`/`.ipy` file in the profile's `startup/`. Cells must then wait for the
    shell (no plain runner): under ipykernel that code runs before the first cell."""
    if os.environ.get("PYTHONSTARTUP"):
        return True
    profile = os.path.join(_ipython_dir(), "profile_default")
    folders = (profile, os.path.join(sys.prefix, "etc", "ipython"), "/usr/local/etc/ipython",
               "/etc/ipython")
    for d in folders:
        for base in _CONFIG_BASES:
            for ext in (".py", ".json"):
                if os.path.isfile(os.path.join(d, base + ext)):
                    return True
    try:
        return any(n.endswith((".py", ".ipy")) for n in os.listdir(os.path.join(profile, "startup")))
    except OSError:
        return False


def _shell_app(shell_class, cfg, module):
    """The shell, built as ipykernel's IPKernelApp builds its own (IPython's
    BaseIPythonApplication and InteractiveShellApp): the default profile (created if missing, as
    ipykernel does), its configuration and the system one, then `cfg` over them. Returns the
    application, whose `init_extensions` and `init_code` the caller runs once the early cells
    are accounted for; None when the application cannot start (an IPython directory that cannot
    be created makes it exit): the caller builds the shell from `cfg` alone."""
    from IPython.core.application import BaseIPythonApplication
    from IPython.core.shellapp import InteractiveShellApp

    class CarbonApp(BaseIPythonApplication, InteractiveShellApp):
        name = "ipython-kernel"  # (IPKernelApp's)
        config_file_name = "ipython_kernel_config.py"

        def init_crash_handler(self):
            pass  # no crash-report file: the driver reports its own failures

        def init_shell(self):
            kw = {"parent": self, "profile_dir": self.profile_dir, "ipython_dir": self.ipython_dir}
            if module is not None:
                kw["user_module"] = module
            self.shell = shell_class.instance(**kw)

    try:
        app = CarbonApp.instance()
        app.initialize([])
        app.config.merge(cfg)
        app.init_path()
        app.init_shell()
        return app
    except BaseException as e:  # SystemExit included: app.exit() on a fatal start
        sys.__stderr__.write("carbon: IPython's profile and configuration not loaded: %s\n" % e)
        return None


def _no_editor(line=""):
    """%edit in a notebook: a UsageError that names what to use instead."""
    from IPython.core.error import UsageError

    raise UsageError("%edit opens a text editor in a terminal, which a notebook's kernel does not "
                     "have: `%load FILE` puts a file in this cell, `%%writefile FILE` saves a "
                     "cell to a file")


class IPythonEngine:
    """IPython's InteractiveShell, with its display machinery pointed at the channel."""

    def __init__(self, module=None, early=()):
        """`module`: the namespace the plain runner used for the first cells (`early`: their
        plans), taken over so their state stays and IPython counts them as it would have."""
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
                result = {"data": format_dict, "metadata": md_dict or {}}
                if self.shell.ast_node_interactivity in _EVERY_VALUE or _figures_pending():
                    # several values a cell, or figures that the cell's end shows: each value in
                    # its place among the cell's outputs (ipykernel publishes each as it comes)
                    result["t"] = "result"
                    _chan.send_ordered(result)
                else:
                    engine.result = result  # at most one, the cell's last: it comes with "done"

            def finish_displayhook(self):
                pass

        class CarbonShell(InteractiveShell):
            display_pub_class = CarbonDisplayPublisher
            displayhook_class = CarbonDisplayHook

            def _showtraceback(self, etype, evalue, stb):
                # Shown as it happens, in its place among the cell's outputs, as ipykernel does:
                # a failing `%run` script, a nested run_cell, `showtraceback()` in an `except`,
                # all in cells that go on. The last one is the failed cell's error (its reply).
                err = {"ename": getattr(etype, "__name__", str(etype)), "evalue": str(evalue),
                       "traceback": list(stb)}
                _chan.send_ordered(dict(err, t="error"))
                err["shown"] = True
                engine.error = err

            def set_next_input(self, text, replace=False):
                # `%load`, `%recall`: the front-end puts `text` in the next cell (or this one),
                # as ipykernel's ZMQInteractiveShell asks it (one such payload a cell).
                self.payload_manager.write_payload(
                    {"source": "set_next_input", "text": text, "replace": replace}, single=True)

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
        app = _shell_app(CarbonShell, cfg, module)
        if app is not None:
            self.shell = app.shell
        elif module is None:
            self.shell = CarbonShell.instance(config=cfg)
        else:
            self.shell = CarbonShell.instance(config=cfg, user_module=module)
        # What run_cell did not do for the cells run before: the history (In, _ih, _iN), the
        # execution count, and the "Cell In[n]" names of their code in tracebacks.
        names = getattr(getattr(self.shell, "compile", None), "_filename_map", None)
        stored = 0
        for plan in early:
            if names is not None and plan.name is not None:
                names[plan.name] = plan.number
            # (run_cell's store_history=False: the cell is named, but neither stored nor counted)
            if plan.store:
                self.shell.history_manager.store_inputs(plan.number, plan.cell, plan.raw)
                stored += 1
        self.shell.execution_count += stored
        # (The shell keeps IPython's default colour theme, as ipykernel does: IPython 8 and 9's
        # "neutral" reads on light and dark backgrounds, where "linux" draws a traceback's code
        # in near-white, unreadable in JupyterLab's light theme.)
        # As ipykernel's application goes on: the extensions (`storemagic`, for %store, and the
        # configured ones), then exec_lines, $PYTHONSTARTUP and the profile's startup files. Only
        # with a customized profile (no early cells then): init_code also hides the names
        # already in the namespace from %who, which would hide the early cells' variables.
        if app is not None:
            app.init_extensions()
            if _profile_customized():
                app.init_code()
        else:
            for ext in _DEFAULT_EXTENSIONS:
                try:
                    self.shell.extension_manager.load_extension(ext)
                except Exception as e:  # as the application does: a warning, the shell goes on
                    sys.__stderr__.write("carbon: cannot load IPython extension %s: %s\n" % (ext, e))
        # %edit (and %ed) open a text editor on a terminal, which a notebook's kernel has not:
        # IPython's fails with "no attribute 'editor'", ipykernel's sends a payload JupyterLab
        # ignores. Say what does the job in a notebook instead.
        for name in ("edit", "ed"):
            self.shell.register_magic_function(_no_editor, "line", name)
        # obj? / %magic? go to the pager payload, as in ipykernel.
        self.shell.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)
        self.shell.events.register("post_execute", flush_figures)
        self.result = None
        self.error = None
        self.exit_requested = False
        from IPython.core.inputtransformer2 import TransformerManager

        self.tm = TransformerManager()
        self.jedi = _JediBudget(self.shell)

    def run(self, code, store_history=True, silent=False):
        self.result = None
        self.error = None
        _st.executing = True
        try:
            # (as ipykernel passes the request's flags: silent shows no value, stores nothing)
            res = self.shell.run_cell(code, store_history=store_history, silent=silent)
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

    def show_value(self, value):
        """(result, error) of displayhook(value) for a cell the plain runner ran, as IPython's
        run_cell calls it (builtin and display traps set; the cell is in the history already)."""
        self.result = self.error = None
        shell = self.shell
        try:
            with shell.builtin_trap, shell.display_trap:
                shell.displayhook(value)
        except Exception:
            shell.showtraceback()
            return None, self.error
        return self.result, None

    def show_exception(self, number, store=True):
        """The error of an exception that the plain runner is handling (called in its `except`
        block), shown as IPython's run_code shows it (IPython 8/9); kept in the history's
        exceptions when the cell is `store`d, as run_cell keeps it."""
        self.error = None
        etype, value, tb = sys.exc_info()
        # Without the plain runner's frame: IPython hides its own run_code frame (IPython 8 with
        # tb_offset=1, IPython 9 by dropping IPython's frames), and tb_offset=0 shows the rest.
        exc = (etype, value, tb.tb_next if tb is not None else None)
        shell = self.shell
        if issubclass(etype, SystemExit):
            shell.showtraceback(exc, exception_only=True)
            _warn_as_run_code("To exit: use 'exit', 'quit', or Ctrl-D.")
        else:
            shell.showtraceback(exc, tb_offset=0, running_compiled_code=True)
        shell.last_execution_succeeded = False
        hm = shell.history_manager
        fmt = getattr(shell, "_format_exception_for_storage", None)
        if store and fmt is not None and isinstance(getattr(hm, "exceptions", None), dict):
            try:
                hm.exceptions[number] = fmt(value)
            except Exception:
                pass
        # (as IPythonEngine.run when IPython printed the error itself: exception groups...)
        return self.error or {"ename": "Error", "evalue": "the cell failed", "traceback": []}

    def payloads(self):
        """(the pager's data, the next input {"text", "replace"}) the cell asked for, each or
        None; taken, so the next cell starts without them."""
        pm = getattr(self.shell, "payload_manager", None)
        if pm is None:
            return None, None
        payloads = pm.read_payload()
        pm.clear_payload()
        page = next_input = None
        for p in payloads:
            if p.get("source") == "page" and page is None:
                page = p.get("data")
            elif p.get("source") == "set_next_input":
                next_input = {"text": p.get("text", ""), "replace": bool(p.get("replace"))}
        return page, next_input

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


# A cell interrupted while it waited for IPython (what IPythonEngine.run says for an interrupt
# outside the user's code).
_INTERRUPTED = {"ename": "KeyboardInterrupt", "evalue": "",
                "traceback": ["\x1b[0;31mKeyboardInterrupt\x1b[0m"]}


class Driver:
    def __init__(self, engine, loader=None, early=False):
        self.engine = engine
        # Importing IPython (None: done, or no IPython); the engine is the plain one meanwhile.
        self.loader = loader
        # Cells may run before IPython is in (see _plan_early).
        self.early = early and loader is not None
        self.early_plans = []

    def upgrade(self, wait, ordered, interruptible=False):
        """Switches to IPython's engine once its import is done: here, on the main thread and
        between cells. `wait`: wait for the import first (`interruptible`: SIGINT ends the wait
        with KeyboardInterrupt, as it would end the cell). Tells the kernel the IPython version
        (or why there is none) with an "ipython" frame, `ordered` within a cell. True when the
        engine is IPython's."""
        loader = self.loader
        if loader is None:
            return isinstance(self.engine, IPythonEngine)
        if not loader.done.is_set():
            if not wait:
                return False
            if interruptible:
                _st.executing = True
                try:
                    loader.done.wait()
                finally:
                    _st.executing = False
            else:
                loader.done.wait()
        self.loader = None
        loader.close()
        version = warning = None
        said = []
        if loader.error is None:
            plain = self.engine
            # IPython keeps the __main__ it replaces, to put it back at exit.
            if plain.orig_main is not None:
                sys.modules["__main__"] = plain.orig_main
            # Warnings of the shell's start (IPython's virtualenv warning...) go to the kernel's
            # log, as when the shell started before the first cell, not into a cell's output.
            # (sys.stdout/stderr stay: the shell keeps the ones it finds.)
            import warnings

            showwarning = warnings.showwarning
            warnings.showwarning = lambda m, c, f, n, *a, **k: said.append(
                warnings.formatwarning(m, c, f, n))
            try:
                self.engine = IPythonEngine(plain.module, self.early_plans)
                import IPython

                version = IPython.__version__
            except ImportError:
                plain.install_builtins()
            except Exception as e:  # a broken IPython install: run without it, and say so
                plain.install_builtins()
                warning = "IPython failed to start (%s: %s); using the plain Python runner" % (
                    type(e).__name__, e)
            finally:
                warnings.showwarning = showwarning
                sys.modules["__main__"] = plain.module
        elif not isinstance(loader.error, ImportError):
            e = loader.error
            warning = "IPython failed to start (%s: %s); using the plain Python runner" % (
                type(e).__name__, e)
        self.early_plans = []
        builtins.input = _input  # IPython may have replaced it
        frame = {"t": "ipython", "version": version, "warning": warning,
                 "said": "".join(said)[-4096:]}
        if ordered:
            _chan.send_ordered(frame)
        else:
            _chan.send(frame)
        return version is not None

    def run_cell(self, code, store_history=True, silent=False):
        """(result, error) of a cell: early on the plain runner when IPython would give the same,
        else on the engine (waiting for IPython's import first). `store_history` and `silent` as
        IPython's run_cell takes them."""
        store_history = store_history and not silent
        if self.loader is not None:
            if self.early and not self.loader.done.is_set():
                if not code or code.isspace():
                    return None, None  # IPython neither counts nor stores an empty cell
                # IPython names a cell after the count it would take, stored or not
                number = sum(p.store for p in self.early_plans) + 1
                plan = _plan_early(code, number, self.engine.ns)
                if plan is not None:
                    plan.store = store_history
                    plan.silent = silent
                    self.early_plans.append(plan)
                    # (the lambda and _deeper's last call are 2 of the frames)
                    return _deeper(_RUN_CELL_DEPTH - 2, lambda: self.engine.run_early(
                        plan, lambda: self._early_error(plan),
                        lambda value: self._early_value(plan, value)))
            try:
                self.upgrade(wait=True, ordered=True, interruptible=True)
            except KeyboardInterrupt:
                return None, _INTERRUPTED
        return self.engine.run(code, store_history, silent)

    def count_unrun(self, codes):
        """Cells the kernel counted that did not run here (kernel magics such as `%carbon
        status`, cells of another language, empty cells): IPython counts and stores them as
        well, so its count, `In` and the `Cell In[n]` of tracebacks stay the kernel's
        execution_count (under ipykernel IPython runs every cell, magics included). A worker
        started after another ended (a crash, `exit()`) is sent every cell the kernel counted."""
        number = None  # the early cells' count (counted once: a restart sends every cell)
        for code in codes:
            if self.loader is not None and self.early and not self.loader.done.is_set():
                # numbered with the early cells, stored when IPython takes over; no code, no name
                if number is None:
                    number = sum(p.store for p in self.early_plans)
                number += 1
                self.early_plans.append(_EarlyPlan(number, code, code, None, (), None))
                continue
            if self.loader is not None:
                try:
                    self.upgrade(wait=True, ordered=True, interruptible=True)
                except KeyboardInterrupt:
                    return
            shell = getattr(self.engine, "shell", None)
            if shell is None:
                return  # no IPython: the plain runner keeps no count
            shell.history_manager.store_inputs(shell.execution_count, code, code)
            shell.execution_count += 1

    def _early_value(self, plan, value):
        """Shows the value of an early cell's last expression: through IPython's displayhook once
        IPython is in (Out[n], _, _n as if IPython had run the cell), else as the plain runner.
        A silent cell shows none (IPython runs it with interactivity "none")."""
        if plan.silent:
            return None, None
        try:
            ipython = self.upgrade(wait=True, ordered=True, interruptible=True)
        except KeyboardInterrupt:
            return None, _INTERRUPTED
        if ipython:
            return self.engine.show_value(value)
        if plan.raw.rstrip().endswith(";"):
            return None, None
        self.engine.ns["_"] = value
        data, md = _format_plain(value)
        return {"data": data, "metadata": md}, None

    def _early_error(self, plan):
        """Formats the exception an early cell raised (called in the plain runner's `except`):
        with IPython's traceback once IPython is in, as if IPython had run the cell."""
        try:
            ipython = self.upgrade(wait=True, ordered=True, interruptible=True)
        except KeyboardInterrupt:
            return _INTERRUPTED
        if ipython:
            return self.engine.show_exception(plan.number, plan.store)
        e = sys.exc_info()[1]
        return self.engine._error(e, e.__traceback__.tb_next if e.__traceback__ else None)

    def display_bundle(self, data):
        _chan.send_ordered({"t": "display", "data": data, "metadata": {}, "display_id": None,
                            "update": False})

    def dispatch_side(self, msg):
        """Requests that may arrive while a cell waits for input()."""
        op = msg.get("op")
        rid = msg.get("id")
        if op in ("complete", "inspect", "is_complete", "magics") and not _st.executing:
            # IPython's answers, as without the early start: wait for its import (0.5 s at most
            # on a warm machine; these requests do not come before the first cell in practice).
            # Never in a cell's input() wait: the shell is not built in the middle of a cell
            # (early cells cannot call input()).
            self.upgrade(wait=True, ordered=False)
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
        self.count_unrun(msg.get("unrun") or [])
        result, error = self.run_cell(msg["code"], bool(msg.get("store_history", True)),
                                      bool(msg.get("silent", False)))
        pager = next_input = None
        try:
            pager, next_input = self.engine.payloads()
        except Exception:
            pass
        exit_requested = bool(getattr(self.engine, "exit_requested", False))
        _chan.send_ordered({"t": "done", "id": msg.get("id"),
                            "status": "error" if error else "ok",
                            "result": result, "error": error, "pager": pager,
                            "next_input": next_input, "exit": exit_requested})
        return exit_requested

    def loop(self):
        while True:
            if self.loader is not None:
                try:
                    if not _chan.wait_command(self.loader.wake_r):
                        # IPython's import finished while idle: switch now, between cells.
                        self.upgrade(wait=False, ordered=False)
                        continue
                except KeyboardInterrupt:
                    continue
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
    fd_done = None
    if os.environ.pop("CARBON_DONE_FD", "") == "4":
        fd_done = os.dup(4)
        os.close(4)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _chan = Channel(fd_in, fd_out, token, fd_done)
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
    # Ready at once; IPython comes on a thread (see _IPythonLoader) and its version with an
    # "ipython" frame. Without IPython the plain runner stays, as before.
    loader = _IPythonLoader() if _ipython_installed() else None
    engine = PlainEngine(_IPYTHON_MODULE_DOC if loader is not None else None)
    _driver = Driver(engine, loader, early=_venv_matches() and not _profile_customized())
    _chan.send({"t": "ready", "version": "%d.%d.%d" % sys.version_info[:3], "ipython": None,
                "loading": loader is not None, "executable": sys.executable,
                "pid": os.getpid(), "warning": None})
    _driver.loop()
