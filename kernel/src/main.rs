//! carbon-kernel binary: thin CLI over the library.

fn main() {
    // evcxr re-executes this binary as its runtime child; the hook must run before anything else.
    evcxr::runtime_hook();
}
