"""carbon's Python cells answer as ipykernel's do.

Both kernels run the same IPython (this venv's), so the same cells, sent in the same order to
a fresh kernel of each, must give the same outputs: the magics of the extensions IPython's shell
application loads by default (`%store`), and tracebacks with the same text, drawn in colours
that read on a light background (ipykernel keeps IPython's default theme; the "linux" theme
drew a traceback's code in near-white). The colours themselves may differ: ipykernel names a
cell's code after a temporary file (its debugger's need), IPython after the cell, and IPython
highlights more of a cell it can find again (the failing expression, on yellow).
"""

from __future__ import annotations

import json
import os
import re

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")

CELLS = [
    "def f():\n    raise ValueError('boom')\nf()",
    # tracebacks shown as they happen, in cells that go on: each an error output in its place
    "open('bad.py', 'w').write('print(\"start\")\\nraise ValueError(\"in script\")\\n')",
    "%run bad.py\nprint('after the script')",
    "get_ipython().run_cell('1/0')\nprint('after the nested cell')",
    "print('before')\n1/0",
    # payloads: the next cell's text (%load replaces the cell), the pager
    "%load mod.py",
    "%recall 1",
    "get_ipython().set_next_input('next cell text')",
    "len?",
    "x = 1\nx / 0",
    "%xmode Minimal\n[][1]",
    "%xmode Context\nimport json\njson.loads('{')",
    "b = 5\n%store b",
    "del b\n%store -r b\nb",
    "%store",
    "%store -z",
]


def outputs(kernel_name: str, cwd: str, cells=CELLS, env=None) -> list[list[tuple]]:
    """Each cell's outputs (type, and what a front-end shows of it) from a fresh kernel."""
    extra = {} if env is None else {"env": env}
    km, kc = start_new_kernel(kernel_name=kernel_name, cwd=cwd, **extra)
    try:
        results = []
        for code in cells:
            seen: list[tuple] = []

            def hook(msg, seen=seen):
                t, c = msg["msg_type"], msg["content"]
                if t == "stream":
                    seen.append((t, c["name"], c["text"]))
                elif t == "error":
                    seen.append((t, c["ename"], c["evalue"], tuple(c["traceback"])))
                elif t == "execute_result":
                    seen.append((t, address_free(c["data"].get("text/plain")),
                                 c["execution_count"], *sorted(c["data"])))
                elif t == "display_data":
                    seen.append((t, address_free(c["data"].get("text/plain")), *sorted(c["data"])))

            reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
            payloads = tuple(
                (p.get("source"), p.get("text"), p.get("replace"),
                 json.dumps(p.get("data"), sort_keys=True))
                for p in reply["content"].get("payload", []))
            seen.append(("reply", reply["content"]["status"],
                         reply["content"].get("execution_count"), payloads))
            results.append(merged_streams(seen))
        return results
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def merged_streams(outs: list[tuple]) -> list[tuple]:
    """Consecutive stream outputs of one name as one: where a kernel cuts its stream messages
    depends on timing (what a front-end shows is the same)."""
    merged: list[tuple] = []
    for o in outs:
        if o[0] == "stream" and merged and merged[-1][:2] == o[:2]:
            merged[-1] = (o[0], o[1], merged[-1][2] + o[2])
        else:
            merged.append(o)
    return merged


def address_free(text):
    """`text` without the memory addresses of reprs (`<… at 0x7f…>`), which differ by process."""
    return re.sub(r"\b0x[0-9a-f]+\b", "0x…", text) if isinstance(text, str) else text


SGR = re.compile(r"\x1b\[([0-9;]*)m")


def plain(out: tuple) -> tuple:
    """An output with the ANSI colours taken out of its traceback."""
    if out[0] != "error":
        return out
    return out[:3] + (tuple(SGR.sub("", line) for line in out[3]),)


def pale_characters(line: str) -> str:
    """The visible characters of `line` drawn in a near-white foreground (unreadable on white):
    SGR 37/97, or a 256-colour index whose grey or RGB level is above 80 %."""
    pale, fg, pos = [], None, 0
    for m in list(SGR.finditer(line)) + [None]:
        text = line[pos:m.start()] if m else line[pos:]
        if fg is not None and fg_is_pale(fg):
            pale.extend(c for c in text if not c.isspace())
        if m is None:
            break
        pos = m.end()
        codes = [int(c) for c in m.group(1).split(";") if c] or [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c in (0, 39):
                fg = None
            elif 30 <= c <= 37 or 90 <= c <= 97:
                fg = (c,)
            elif c == 38 and i + 2 < len(codes) and codes[i + 1] == 5:
                fg = (38, codes[i + 2])
                i += 2
            elif c == 38 and i + 4 < len(codes) and codes[i + 1] == 2:
                fg = (38, *codes[i + 2:i + 5])
                i += 4
            i += 1
    return "".join(pale)


def fg_is_pale(fg: tuple) -> bool:
    if fg in ((37,), (97,)):
        return True
    if fg[0] == 38 and len(fg) == 2:
        n = fg[1]
        if 232 <= n <= 255:  # the grey ramp: 8 + 10 (n - 232) of 255
            return (8 + 10 * (n - 232)) / 255 > 0.8
        if 16 <= n <= 231:  # the 6x6x6 cube
            levels = [0, 95, 135, 175, 215, 255]
            n -= 16
            rgb = (levels[n // 36], levels[n // 6 % 6], levels[n % 6])
            return min(rgb) / 255 > 0.8
        return n in (7, 15)
    if fg[0] == 38 and len(fg) == 4:
        return min(fg[1:]) / 255 > 0.8
    return False


def same_in_both(cwd, cells, env=None) -> list[list[tuple]]:
    """The cells' outputs in carbon, checked equal to ipykernel's."""
    ours = outputs("carbon", str(cwd), cells, env)
    theirs = outputs("python3", str(cwd), cells, env)
    assert ours == theirs
    return ours


def test_pale_characters_finds_near_white_text():
    assert pale_characters("\x1b[38;5;255m(\x1b[39m x \x1b[97mab\x1b[0m c") == "(ab"
    assert pale_characters("\x1b[38;5;28;01mdef\x1b[39;00m f() \x1b[30;43mx\x1b[39;49m") == ""


def test_the_same_cells_give_the_same_outputs_as_ipykernel(tmp_path):
    (tmp_path / "mod.py").write_text("def hi():\n    return 'hi'\n")
    ours = outputs("carbon", str(tmp_path))
    theirs = outputs("python3", str(tmp_path))
    by_code = dict(zip(CELLS, ours))
    # what the cells do, in case both kernels failed alike
    assert [o[0] for o in by_code["%run bad.py\nprint('after the script')"]] == [
        "stream", "error", "stream", "reply"]
    assert by_code["%load mod.py"][-1][3][0][:3] == (
        "set_next_input", "# %load mod.py\ndef hi():\n    return 'hi'\n", True)
    for code, a, b in zip(CELLS, ours, theirs):
        assert [plain(o) for o in a] == [plain(o) for o in b], (
            f"cell {code!r}:\ncarbon:    {a!r}\nipykernel: {b!r}")
        for out in a:
            if out[0] == "error":
                pale = "".join(pale_characters(line) for line in out[3])
                assert not pale, f"cell {code!r}: traceback text in near-white: {pale!r}"


def test_a_profile_configures_and_starts_the_shell_as_under_ipykernel(tmp_path):
    """IPython's default profile, as ipykernel reads it: ipython_config.py and
    ipython_kernel_config.py (here: every expression's value shown, a line run at start), and the
    startup files, run before the first cell (and hidden from %who, as ipykernel hides them)."""
    profile = tmp_path / "ipython" / "profile_default"
    (profile / "startup").mkdir(parents=True)
    (profile / "ipython_config.py").write_text(
        "c.InteractiveShell.ast_node_interactivity = 'all'\n")
    (profile / "ipython_kernel_config.py").write_text(
        "c.InteractiveShellApp.exec_lines = ['from_exec_lines = 7']\n")
    (profile / "startup" / "00-first.py").write_text("from_startup = 42\n")
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"))
    cells = ["from_startup + from_exec_lines", "1\n2", "mine = 3\n%who"]
    work = tmp_path / "work"
    work.mkdir()
    ours = same_in_both(work, cells, env)
    # what the configuration does, in case both kernels ignored it alike
    assert ("execute_result", "49", 1, "text/plain") in ours[0], ours[0]
    assert [o[1] for o in ours[1] if o[0] == "execute_result"] == ["1", "2"], ours[1]


def test_every_value_of_a_cell_in_its_place_as_under_ipykernel(tmp_path):
    """`ast_node_interactivity = "all"` (set with %config, a teacher's usual way): each value is
    an execute_result of its own, in order among the prints; a loop's values under "last"."""
    cells = [
        "%config InteractiveShell.ast_node_interactivity = 'all'",
        "1\nprint('between')\n2\nx = 3\nx",
        "%config InteractiveShell.ast_node_interactivity = 'last'",
        "for i in range(3):\n    i",
        "%config InteractiveShell.ast_node_interactivity = 'last_expr'",
        "4\n5",
    ]
    ours = same_in_both(tmp_path, cells)
    assert [o[:3] for o in ours[1] if o[0] != "reply"] == [
        ("execute_result", "1", 2), ("stream", "stdout", "between\n"), ("execute_result", "2", 2),
        ("execute_result", "3", 2)], ours[1]


def test_figures_as_under_ipykernel(tmp_path):
    """matplotlib as ipykernel sets it up (matplotlib_inline): a cell's value before the figure
    its end shows, a `Figure` value shown as an image in a later cell, InlineBackend's options."""
    cells = [
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])",
        "fig, ax = plt.subplots()\nax.bar([1, 2], [3, 4]);",
        "fig",
        "%config InlineBackend.figure_formats = ['svg']\nplt.plot([1]);",
    ]
    ours = same_in_both(tmp_path, cells)
    assert [o[0] for o in ours[0]] == ["execute_result", "display_data", "reply"], ours[0]
    assert ("execute_result", "<Figure size 640x480 with 1 Axes>", 3, "image/png",
            "text/plain") in ours[2], ours[2]
    assert ours[3][0][2:] == ("image/svg+xml", "text/plain"), ours[3]
