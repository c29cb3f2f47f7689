//! e2e: rust_lang
