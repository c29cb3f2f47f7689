//! units (owned by a helper; see docs)
