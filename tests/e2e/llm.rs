//! e2e: llm
