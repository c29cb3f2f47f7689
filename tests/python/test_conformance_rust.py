"""jupyter-kernel-test 0.7 (PyPI) against the installed `carbon-rust` kernel (Rust through evcxr).

Every `KernelTests` attribute that applies to Rust is filled in (shared/reference/jupyter-kernel.md
§5 lists what each checks). Left out, because Rust/evcxr has no such thing:

* `code_clear_output`: evcxr has no clear_output call for user code.

Each Rust cell compiles (0.3–3 s; evcxr itself starts in ~4 s on the first cell), so the class
starts evcxr before the tests. The completion and inspect samples use names the tests define themselves: the
rust-src component (needed for std items) is not installed everywhere.
"""

import jupyter_kernel_test as jkt
import pytest

# Install the kernelspecs into the venv before the unittest classes start their kernels.
pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")

WARMUP_TIMEOUT_S = 600

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       '<rect width="10" height="10"/></svg>')


def _mime_block(mime: str, body: str) -> str:
    """A Rust statement printing an evcxr content block (what evcxr_display implementations do)."""
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    return f'println!("EVCXR_BEGIN_CONTENT {mime}\\n{escaped}\\nEVCXR_END_CONTENT");'


class CarbonRustKernelTests(jkt.KernelTests):
    """The KernelTests tests that apply to Rust, run against one `carbon-rust` kernel."""

    kernel_name = "carbon-rust"
    language_name = "rust"
    file_extension = ".rs"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # evcxr starts lazily on the first Rust cell (~4 s with optimised dependencies, minutes
        # without). jupyter-kernel-test gives each request 15 s (its TIMEOUT), which must cover
        # compiling one cell only, so evcxr is started here.
        reply = cls.kc.execute_interactive("1", timeout=WARMUP_TIMEOUT_S, output_hook=lambda _m: None)
        assert reply["content"]["status"] == "ok", reply["content"]

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("oops");'

    # rust-analyzer inside evcxr completes names from the cell itself (std needs rust-src); a
    # function comes with its call parentheses, as evcxr_jupyter sends it.
    completion_samples = [
        {"text": "fn carbon_sample_fn() {}\ncarbon_sample_f", "matches": {"carbon_sample_fn()"}},
    ]

    complete_code_samples = ["1", 'println!("hello, world");', "fn f(x: i32) -> i32 {\n    x * 2\n}\n"]
    incomplete_code_samples = ["fn f() {", "let v = vec![1,", 'let s = "abc']
    invalid_code_samples = ["fn f() { ) }", "let x = ];"]

    # `%magic?` answers with a pager payload in every language of the kernel.
    code_page_something = "%lang?"

    # A panic is the cell's one `error` output (ename "panic").
    code_generate_error = 'panic!("carbon")'

    code_execute_result = [
        {"code": "1 + 2 + 3", "result": "6"},
        {"code": "vec![1, 4, 9]", "result": "[1, 4, 9]"},
        {"code": '"carbon".to_uppercase()', "result": '"CARBON"'},
    ]

    code_display_data = [
        {"code": _mime_block("text/html", "<b>test</b>"), "mime": "text/html"},
        {"code": _mime_block("image/svg+xml", SVG), "mime": "image/svg+xml"},
    ]

    # Matches "1 + 2 + 3" only (glob); the history lives in the kernel, not in evcxr.
    code_history_pattern = "1 + 2*"
    supported_history_operations = ("tail", "search")

    code_inspect_sample = "struct CarbonInspected;\nCarbonInspected"
