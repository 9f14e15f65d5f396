//! The decision at the heart of [`crate::Store::rotate_refresh`], shared by the backends so
//! that they cannot disagree on it. It owns no I/O: each backend, inside its one transaction,
//! reads the token (joined with its family and its successor) with the same query, turns the
//! row into a [`TokenState`], asks [`decide`] what to do, and does exactly that [`Step`].

use crate::Rotation;

/// The columns the backends' rotation query selects, in order: the token's `family_id`,
/// `data`, `expires_at`, `replaced_by` and `replaced_at`, its family's `revoked_at`, and its
/// successor's (the row `replaced_by` names) `key` and `replaced_at` — both `NULL` when there
/// is no such row.
pub(crate) type TokenRow = (
    String,
    String,
    i64,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
);

/// How many times a backend reads and decides before giving up. A conditional `UPDATE` that
/// lost to a concurrent rotation sends it back to read once more; that second read sees the
/// token replaced (a replaced token never becomes unreplaced), so the second decision is
/// never [`Step::Replace`] and two passes always suffice. The third is slack.
pub(crate) const MAX_PASSES: usize = 3;

/// One refresh token as read inside a rotation transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenState {
    /// The token's family.
    pub(crate) family_id: String,
    /// The grant's data.
    pub(crate) data: String,
    /// The token's (absolute) expiry.
    pub(crate) expires_at: i64,
    /// The successor's key and when the token was replaced, if it has been: `replaced_at` is
    /// the marker (the conditional `UPDATE` tests it), `replaced_by` is set with it.
    pub(crate) replaced: Option<(Vec<u8>, i64)>,
    /// Whether the family has been revoked.
    pub(crate) family_revoked: bool,
    /// Whether the successor row exists and has not been replaced itself.
    pub(crate) successor_unused: bool,
}

impl From<TokenRow> for TokenState {
    fn from(row: TokenRow) -> TokenState {
        let (family_id, data, expires_at, replaced_by, replaced_at, revoked_at, next, next_at) =
            row;
        TokenState {
            family_id,
            data,
            expires_at,
            replaced: replaced_at.map(|at| (replaced_by.unwrap_or_default(), at)),
            family_revoked: revoked_at.is_some(),
            successor_unused: next.is_some() && next_at.is_none(),
        }
    }
}

/// What a backend does after reading a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Change nothing and answer this.
    Answer(Rotation),
    /// Mark the token replaced by `new_key` at `now` with
    /// `UPDATE … WHERE key = old_key AND replaced_at IS NULL`; when that changes one row,
    /// insert the successor with these values and answer [`Rotation::Rotated`] with them;
    /// when it changes none, a concurrent caller replaced the token first: read again.
    Replace {
        /// The family (the successor's too).
        family_id: String,
        /// The grant's data (the successor's too).
        data: String,
        /// The expiry (the successor's too).
        expires_at: i64,
    },
    /// Set the family's `revoked_at` to `now` (unless already set) and answer
    /// [`Rotation::Reused`].
    RevokeFamily {
        /// The family to revoke.
        family_id: String,
    },
}

/// Decides a rotation of the token read as `state` (`None`: no such token, or its family is
/// gone) into `new_key` at `now`, with a grace window of `grace` seconds. The order of the
/// checks is the contract of [`crate::Store::rotate_refresh`]: expiry first, then revocation,
/// then first use, grace retry or reuse.
pub(crate) fn decide(state: Option<TokenState>, new_key: &[u8], now: i64, grace: i64) -> Step {
    let Some(token) = state.filter(|t| t.expires_at > now) else {
        return Step::Answer(Rotation::Missing);
    };
    if token.family_revoked {
        return Step::Answer(Rotation::Revoked);
    }
    match token.replaced {
        None => Step::Replace {
            family_id: token.family_id,
            data: token.data,
            expires_at: token.expires_at,
        },
        // `saturating_sub`: a `replaced_at` written by a process whose clock is ahead counts
        // as just now, and no caller-supplied extreme can overflow.
        Some((by, at))
            if by == new_key && now.saturating_sub(at) <= grace && token.successor_unused =>
        {
            Step::Answer(Rotation::Grace {
                family_id: token.family_id,
                data: token.data,
                expires_at: token.expires_at,
            })
        }
        Some(_) => Step::RevokeFamily {
            family_id: token.family_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(replaced: Option<(&[u8], i64)>) -> TokenState {
        TokenState {
            family_id: "F".to_owned(),
            data: "D".to_owned(),
            expires_at: 100,
            replaced: replaced.map(|(by, at)| (by.to_vec(), at)),
            family_revoked: false,
            successor_unused: replaced.is_some(),
        }
    }

    fn grace() -> Step {
        Step::Answer(Rotation::Grace {
            family_id: "F".to_owned(),
            data: "D".to_owned(),
            expires_at: 100,
        })
    }

    fn reused() -> Step {
        Step::RevokeFamily {
            family_id: "F".to_owned(),
        }
    }

    #[test]
    fn missing_and_expired() {
        assert_eq!(decide(None, b"n", 0, 5), Step::Answer(Rotation::Missing));
        assert_eq!(
            decide(Some(token(None)), b"n", 100, 5),
            Step::Answer(Rotation::Missing)
        );
        // Expiry is checked before revocation and reuse.
        let mut revoked = token(Some((b"x", 10)));
        revoked.family_revoked = true;
        assert_eq!(
            decide(Some(revoked.clone()), b"n", 100, 5),
            Step::Answer(Rotation::Missing)
        );
        assert_eq!(
            decide(Some(revoked), b"n", 99, 5),
            Step::Answer(Rotation::Revoked)
        );
    }

    #[test]
    fn first_use_replaces() {
        assert_eq!(
            decide(Some(token(None)), b"n", 99, 5),
            Step::Replace {
                family_id: "F".to_owned(),
                data: "D".to_owned(),
                expires_at: 100
            }
        );
    }

    #[test]
    fn grace_needs_same_successor_inside_window_and_unused() {
        let t = token(Some((b"n", 50)));
        assert_eq!(decide(Some(t.clone()), b"n", 50, 5), grace());
        assert_eq!(decide(Some(t.clone()), b"n", 55, 5), grace());
        // A clock behind the one that replaced the token.
        assert_eq!(decide(Some(t.clone()), b"n", 40, 5), grace());
        assert_eq!(decide(Some(t.clone()), b"n", 56, 5), reused());
        assert_eq!(decide(Some(t.clone()), b"other", 51, 5), reused());
        assert_eq!(decide(Some(t.clone()), b"n", 50, 0), grace());
        assert_eq!(decide(Some(t.clone()), b"n", 51, 0), reused());
        let mut used = t;
        used.successor_unused = false;
        assert_eq!(decide(Some(used), b"n", 51, 5), reused());
    }

    #[test]
    fn extremes_do_not_overflow() {
        // Replaced "in the future" (another process's clock): just now.
        let t = token(Some((b"n", i64::MAX)));
        assert_eq!(decide(Some(t), b"n", i64::MIN, 5), grace());
        let mut t = token(Some((b"n", i64::MIN)));
        t.expires_at = i64::MAX;
        assert_eq!(
            decide(Some(t), b"n", i64::MAX - 1, i64::MAX),
            Step::Answer(Rotation::Grace {
                family_id: "F".to_owned(),
                data: "D".to_owned(),
                expires_at: i64::MAX
            })
        );
    }

    #[test]
    fn row_conversion() {
        let row: TokenRow = (
            "F".to_owned(),
            "D".to_owned(),
            100,
            Some(b"n".to_vec()),
            Some(7),
            None,
            Some(b"n".to_vec()),
            None,
        );
        assert_eq!(TokenState::from(row), token(Some((b"n", 7))));
        let row: TokenRow = (
            "F".to_owned(),
            "D".to_owned(),
            100,
            None,
            None,
            Some(3),
            None,
            None,
        );
        let state = TokenState::from(row);
        assert!(state.family_revoked && !state.successor_unused && state.replaced.is_none());
    }
}
