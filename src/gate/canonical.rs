//! Go `encoding/json`-compatible canonical JSON (SKELETON).
