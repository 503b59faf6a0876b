//! The admin listener: approvals API (SPEC §7), web inbox, `/metrics`, `/healthz`, `/readyz`.
//!
//! Input: HTTP requests from approvers, requesters and scrapers. Approver authentication reuses
//! the proxy's caller classification (`Policy::callers`). Output: JSON (`Approval`), SSE,
//! HTML; every error is an `application/problem+json` body mapped in one place.

pub mod inbox;
