"""jupyter-kernel-test 0.7 (PyPI) against the installed `carbon-java` kernel: Java (JShell) as the
default language of plain cells.

Every attribute of `KernelTests` that applies to Java is filled in, so none of its tests skip:
Java has no IPython, so the pager is `Name?` (JShell's documentation of a name), display data and
clear_output come from the `display(mime, data)` / `clearOutput()` methods every Java cell has.
Values are JShell's own renderings (strings quoted, as `jshell` prints them). History is the
kernel's, not the language's: the same operations as the Python kernel.

Needs a JDK 17+ with jshell on the machine (or CARBON_JAVA_HOME); without one the module skips.
"""

import os
import shutil
from pathlib import Path

import jupyter_kernel_test as jkt
import pytest

# Install the kernelspecs into the venv before the unittest classes start their kernels.
pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")


def _have_jdk() -> bool:
    home = os.environ.get("CARBON_JAVA_HOME") or os.environ.get("JAVA_HOME")
    if home:
        return (Path(home) / "bin" / "javac").is_file()
    return shutil.which("javac") is not None


if not _have_jdk():
    pytest.skip("no JDK 17+ (javac/jshell) on this machine", allow_module_level=True)

SVG = ('<svg xmlns=\\"http://www.w3.org/2000/svg\\" width=\\"10\\" height=\\"10\\">'
       '<rect width=\\"10\\" height=\\"10\\"/></svg>')


class CarbonJavaKernelTests(jkt.KernelTests):
    """The 12 KernelTests tests, run against one `carbon-java` kernel."""

    kernel_name = "carbon-java"
    language_name = "java"
    file_extension = ".java"

    code_hello_world = 'System.out.println("hello, world");'
    code_stderr = 'System.err.println("oops");'

    # JShell's completion (SourceCodeAnalysis.completionSuggestions) gives exactly these.
    completion_samples = [
        {"text": "Math.ma", "matches": {"max("}},
        {"text": "System.currentTimeM", "matches": {"currentTimeMillis()"}},
    ]

    # SourceCodeAnalysis.analyzeCompletion: a missing final ';' is complete (JShell adds it).
    complete_code_samples = [
        "1",
        'System.out.println("hello, world");',
        "int f(int x) {\n    return x * 2;\n}",
        "int y = 3",
    ]
    incomplete_code_samples = [
        "int f(int x) {\n    return x;",
        'String s = """\nhello',
        "for (int i = 0; i < 3; i++)",
    ]
    invalid_code_samples = ["int x = )", "class 1A {}"]

    # `Name?` alone in a cell answers with a pager payload (JShell's documentation).
    code_page_something = "Math.max?"

    code_generate_error = 'throw new IllegalStateException("boom");'

    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": '"carbon".toUpperCase()', "result": '"CARBON"'},
        {"code": "java.util.List.of(1, 4, 9)", "result": "[1, 4, 9]"},
    ]

    code_display_data = [
        {"code": 'display("text/html", "<b>test</b>");', "mime": "text/html"},
        {"code": 'display("text/latex", "$\\\\frac{1}{2}$");', "mime": "text/latex"},
        {"code": f'display("image/svg+xml", "{SVG}");', "mime": "image/svg+xml"},
    ]

    # Matches "1+2+3" only (glob), as for the Python kernel.
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")

    code_inspect_sample = "Math.abs"

    code_clear_output = "clearOutput();"
