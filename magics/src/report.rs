//! report (owned by a helper; see docs)
