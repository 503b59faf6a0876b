//! The data plane (SKELETON).
