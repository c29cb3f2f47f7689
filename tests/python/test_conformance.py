"""jupyter-kernel-test 0.7 (PyPI) against the installed `carbon` kernel, Python as its language.

Every attribute of `KernelTests` that applies to Python is filled in, so none of its tests skip
(shared/reference/jupyter-kernel.md §5 lists them and what each checks). The samples follow what
IPython users type; where they rely on IPython (pager, display helpers) the kernel's Python runtime
uses IPython's InteractiveShell, which the project venv has.
"""

import jupyter_kernel_test as jkt
import pytest

# Install the kernelspecs into the venv before the unittest classes start their kernels.
pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       '<rect width="10" height="10"/></svg>')


class CarbonPythonKernelTests(jkt.KernelTests):
    """The 12 KernelTests tests, run against one `carbon` kernel."""

    kernel_name = "carbon"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('oops', file=sys.stderr)"

    # IPython's completer (jedi off or on) answers exactly these for such prefixes.
    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "import collections; collections.Ordered", "matches": {"OrderedDict"}},
    ]

    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n    return x * 2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n    x * 2", "for i in range(3):"]
    invalid_code_samples = ["import = 7q", "x = )"]

    # `obj?` answers with a pager payload, not iopub output.
    code_page_something = "print?"

    # A bare `raise` with no active exception: exactly one `error` output, status error.
    code_generate_error = "raise"

    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n * n for n in range(1, 4)]", "result": "[1, 4, 9]"},
        {"code": "'carbon'.upper()", "result": "'CARBON'"},
    ]

    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
         "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
         "mime": "text/latex"},
        {"code": f"from IPython.display import SVG, display; display(SVG({SVG!r}))",
         "mime": "image/svg+xml"},
    ]

    # Matches "1+2+3" only (glob); the test runs code_execute_result several times before searching.
    code_history_pattern = "1?2*"
    # All three, "range" included: ipykernel fails "range" (it answers session 0 for the current
    # session, shared/reference/jupyter-kernel.md §5); carbon-kernel reports one session number.
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "zip"

    code_clear_output = "from IPython.display import clear_output; clear_output()"


class CarbonPythonIopubWelcome(jkt.IopubWelcomeTests):
    """JEP 65: the first iopub message a new subscriber gets is `iopub_welcome`."""

    kernel_name = "carbon"
    support_iopub_welcome = True

