//! e2e: report
