//! A scripted runtime for tests of the server and exec layers (no child process).
