//! Hostile-input tests for the codec, one module per class of hole found
//! by the review in issue 13. Each case is a variant an attacker could
//! send; each must be refused (requests) or read with certainty or refused
//! (answers), never passed through unread.

mod answers;
mod headers;
mod requests;
mod sse;

use super::lists::{ListItem, ListKind};

/// The policy every answer test runs: `delete_file` (and anything named
/// after it) is hidden.
pub(super) fn hide_delete(_: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
    items.iter().map(|i| !i.name.contains("delete")).collect()
}
