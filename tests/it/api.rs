//! The approvals API (README, Approvals API) end to end: the admin router on port 0 over a real store, every
//! case run on SQLite and on Postgres (a fresh database each; skipped loudly when unreachable).

mod access;
mod decisions;
mod reads;
mod session;

use access::*;
use decisions::*;
use reads::*;
use session::*;

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(crate::support::db::sqlite().await).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                if let Some(store) = crate::support::db::postgres().await {
                    super::$case(store).await
                }
            })*
        }
    };
}

on_both_stores!(
    credentials_are_required_and_only_approvers_decide,
    self_approval_is_forbidden_by_subject_and_by_act_chain,
    quorum_of_two_needs_two_distinct_approvers_and_one_vote_each,
    one_deny_denies,
    decisions_on_expired_consumed_or_withdrawn_approvals_conflict,
    bypass_is_admin_only_and_needs_a_reason,
    only_the_requester_withdraws,
    requesting_approval_creates_then_deduplicates,
    list_filters_and_cursor_pagination,
    long_poll_returns_when_decided,
    events_stream_live_and_resume_with_last_event_id,
    health_readiness_and_metrics,
    an_approver_session_lists_watches_and_decides,
    refused_or_gated_sessions_do_not_decide,
);
