//! `tracestate` under W3C Trace Context Level 2: parsed, validated and written by this crate,
//! because the SDK's `TraceState` follows the Level 1 key grammar (one `@`, and the part after
//! it one character short), takes empty values, and cuts a list of more than 32 members to 32
//! silently.

use std::fmt;
use std::sync::Arc;

use opentelemetry::trace::TraceState;

/// Most list members a `tracestate` holds (W3C).
pub const MAX_MEMBERS: usize = 32;
/// Longest key and longest value, in characters (W3C).
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 256;

/// A `tracestate` list that parsed under W3C Trace Context Level 2: at most 32 `key=value`
/// members, each key unique, in the order received.
///
/// It is held as its canonical header value — the members joined by `,`, without the optional
/// white space and the empty members the grammar allows — so cloning it is a reference count
/// and writing it out a copy.
///
/// ```
/// use tower_otel_http::propagation::Tracestate;
///
/// let ts = Tracestate::parse("congo=t61rcWkgMzE , rojo=00f067aa0ba902b7,,").unwrap();
/// assert_eq!(ts.as_str(), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
/// assert_eq!(ts.get("rojo"), Some("00f067aa0ba902b7"));
/// // Level 2 keys: any number of `@`, up to 256 characters
/// assert!(Tracestate::parse("foo@@bar=1").is_ok());
/// // an empty value is not a member: the whole header is refused
/// assert!(Tracestate::parse("foo=,bar=3").is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tracestate {
    /// The canonical header value; empty for an empty list.
    header: Arc<str>,
    len: u8,
}

/// Why a `tracestate` header was refused: the whole header is discarded then (a header that
/// does not parse is not handed on in part).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TracestateError {
    /// A list member that is neither empty nor a valid `key=value` (its position among the
    /// non-empty members, from 0).
    InvalidMember {
        /// Position among the non-empty members, from 0.
        index: usize,
    },
    /// A key that appears twice (W3C: one entry per key).
    DuplicateKey {
        /// Position of the second occurrence among the non-empty members, from 0.
        index: usize,
    },
    /// More than 32 members.
    TooManyMembers,
}

impl fmt::Display for TracestateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TracestateError::InvalidMember { index } => {
                write!(f, "tracestate member {index} is not a valid key=value")
            }
            TracestateError::DuplicateKey { index } => {
                write!(f, "tracestate member {index} repeats an earlier key")
            }
            TracestateError::TooManyMembers => {
                write!(f, "tracestate has more than {MAX_MEMBERS} members")
            }
        }
    }
}

impl std::error::Error for TracestateError {}

/// `key = ( lcalpha / DIGIT ) 0*255 ( lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@" )`.
pub(crate) fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let Some((&first, rest)) = b.split_first() else {
        return false;
    };
    b.len() <= MAX_KEY_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.iter().all(|&c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII characters but `,` and `=`, not
/// ending in a space.
pub(crate) fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_VALUE_LEN
        && b[b.len() - 1] != b' '
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

impl Tracestate {
    /// Parse one `tracestate` header value.
    ///
    /// # Errors
    ///
    /// When the value does not parse under the Level 2 grammar: a member that is not a valid
    /// `key=value`, a repeated key, or more than 32 members.
    pub fn parse(value: &str) -> Result<Self, TracestateError> {
        Self::from_fields([value])
    }

    /// Parse a `tracestate` sent as several header fields: the fields are combined in order, as
    /// if joined with `,`.
    ///
    /// # Errors
    ///
    /// As [`Tracestate::parse`] for the combined value.
    pub fn from_fields<'a, I>(fields: I) -> Result<Self, TracestateError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        // the members, borrowed from the fields; a repeated key is looked for among them
        let mut members: [&'a str; MAX_MEMBERS] = [""; MAX_MEMBERS];
        let mut keys: [&'a str; MAX_MEMBERS] = [""; MAX_MEMBERS];
        let mut len = 0usize;
        // the one field, while there is one: when it is canonical already it is the header
        let mut only: Option<&'a str> = None;
        let mut fields_seen = 0usize;
        for field in fields {
            fields_seen += 1;
            only = (fields_seen == 1).then_some(field);
            for raw in field.split(',') {
                let member = raw.trim_matches([' ', '\t']);
                if member.is_empty() {
                    continue;
                }
                let index = len;
                let Some((key, value)) = member.split_once('=') else {
                    return Err(TracestateError::InvalidMember { index });
                };
                if !valid_key(key) || !valid_value(value) {
                    return Err(TracestateError::InvalidMember { index });
                }
                if len == MAX_MEMBERS {
                    return Err(TracestateError::TooManyMembers);
                }
                if keys[..len].contains(&key) {
                    return Err(TracestateError::DuplicateKey { index });
                }
                members[len] = member;
                keys[len] = key;
                len += 1;
            }
        }
        let members = &members[..len];
        let canonical_len = members.iter().map(|m| m.len()).sum::<usize>() + len.saturating_sub(1);
        let header: Arc<str> = match only {
            // members joined by single commas, nothing else: the field as it came (one copy)
            Some(field) if field.len() == canonical_len => Arc::from(field),
            _ => Arc::from(members.join(",")),
        };
        Ok(Tracestate {
            header,
            len: len as u8,
        })
    }

    /// Members already known to be valid and distinct, at most 32.
    fn from_valid_members<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = String::new();
        let mut len = 0u8;
        for (k, v) in members {
            if len > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            len += 1;
        }
        Tracestate {
            header: Arc::from(out),
            len,
        }
    }

    /// The header value: the members joined by `,` (empty for an empty list).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.header
    }

    /// How many members.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the list has no member.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The members in order, as `(key, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.header
            .split(',')
            .filter(|m| !m.is_empty())
            .filter_map(|m| m.split_once('='))
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The SDK's `TraceState` as a Level 2 list: the members that are valid under the Level 2
    /// grammar, the first occurrence of a key, at most 32 (what the SDK's type holds but the
    /// grammar refuses — an empty value, a value that is not printable ASCII — is left out).
    pub(crate) fn from_sdk(state: &TraceState) -> Self {
        let mut seen: Vec<&str> = Vec::new();
        Self::from_valid_members(
            state
                .into_iter()
                .filter(|&(k, v)| {
                    let fresh = valid_key(k) && valid_value(v) && !seen.contains(&k);
                    if fresh {
                        seen.push(k);
                    }
                    fresh
                })
                .take(MAX_MEMBERS),
        )
    }

    /// The members the SDK's `TraceState` accepts, in order: what a span exported through the
    /// SDK can hold of this list; and which members those are.
    pub(crate) fn to_sdk(&self) -> (TraceState, Handed) {
        if self.is_empty() {
            return (TraceState::NONE, Handed(0));
        }
        if let Ok(all) = TraceState::from_key_value(self.iter()) {
            return (all, Handed(u32::MAX));
        }
        // the SDK refuses the whole list for one member it refuses: keep those it takes
        let mut mask = 0u32;
        for (i, kv) in self.iter().enumerate() {
            if TraceState::from_key_value([kv]).is_ok() {
                mask |= 1 << i;
            }
        }
        let handed = Handed(mask);
        let state = TraceState::from_key_value(self.handed(handed)).unwrap_or_default();
        (state, handed)
    }

    /// The members that were handed to the SDK.
    fn handed(&self, handed: Handed) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.iter()
            .enumerate()
            .filter(move |(i, _)| handed.0 & (1 << i) != 0)
            .map(|(_, kv)| kv)
    }

    /// Whether the SDK's copy `now` is still what it was handed (compared without building
    /// anything).
    pub(crate) fn unchanged(&self, handed: Handed, now: &TraceState) -> bool {
        let mut now = now.into_iter();
        self.handed(handed).all(|kv| now.next() == Some(kv)) && now.next().is_none()
    }

    /// This list after the changes something in the process made to the SDK's copy of it:
    /// `handed` is what the SDK was given ([`Tracestate::to_sdk`]), `now` what it holds now.
    /// Keys added or updated in `now` come first, in `now`'s order (W3C: modified keys move to
    /// the left); keys the SDK held and no longer holds are deleted; every other member of
    /// this list — those the SDK could not hold among them — follows in its order; at most 32
    /// (the last dropped).
    pub(crate) fn merged(&self, handed: Handed, now: &TraceState) -> Self {
        let was = |k: &str| {
            self.handed(handed)
                .find_map(|(hk, hv)| (hk == k).then_some(hv))
        };
        let mut seen: Vec<&str> = Vec::new();
        let first: Vec<(&str, &str)> = now
            .into_iter()
            .filter(|&(k, v)| {
                let fresh =
                    was(k) != Some(v) && valid_key(k) && valid_value(v) && !seen.contains(&k);
                if fresh {
                    seen.push(k);
                }
                fresh
            })
            .collect();
        // a key the SDK held that it no longer holds with the same value: deleted, or updated
        // (first above, or left out when its new value is not valid under Level 2)
        let gone = |k: &str| was(k).is_some_and(|v| now.get(k) != Some(v));
        let rest = self.iter().filter(|(k, _)| !seen.contains(k) && !gone(k));
        Self::from_valid_members(first.into_iter().chain(rest).take(MAX_MEMBERS))
    }
}

/// Which members of a [`Tracestate`] were handed to the SDK's `TraceState` (a bit per member).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handed(u32);

impl Handed {
    /// Whether every one of `len` members was handed over.
    pub(crate) fn all(self, len: usize) -> bool {
        let want = if len >= 32 {
            u32::MAX
        } else {
            (1u32 << len) - 1
        };
        self.0 & want == want
    }
}

impl fmt::Debug for Tracestate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tracestate").field(&&*self.header).finish()
    }
}

impl fmt::Display for Tracestate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header)
    }
}

impl std::str::FromStr for Tracestate {
    type Err = TracestateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tracestate::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        Tracestate::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn keys_follow_the_level_2_grammar() {
        // from the issue: valid under Level 2, refused by the SDK's Level 1 check
        for key in ["foo@@bar", "foo@bar@baz", "foo@", "0abc", "a", "a_-*/@9"] {
            assert!(valid_key(key), "{key}");
        }
        let long = format!("{}@{}", "t".repeat(241), "s".repeat(14));
        assert_eq!(long.len(), 256);
        assert!(valid_key(&long));
        assert!(!valid_key(&"a".repeat(257)));
        assert!(valid_key(&"a".repeat(256)));
        for key in [
            "", "@foo", "_a", "-a", "*a", "/a", "Foo", "fOo", "a b", "a=b", "a,b", "é",
        ] {
            assert!(!valid_key(key), "{key}");
        }
    }

    #[test]
    fn every_key_byte_is_accepted_iff_the_grammar_says_so() {
        for b in 0..=127u8 {
            let c = char::from(b);
            let first = c.is_ascii_lowercase() || c.is_ascii_digit();
            let later = first || "_-*/@".contains(c);
            assert_eq!(valid_key(&format!("{c}a")), first, "{b:#x} first");
            assert_eq!(valid_key(&format!("a{c}")), later, "{b:#x} later");
        }
    }

    #[test]
    fn values_follow_the_grammar() {
        assert!(valid_value("x"));
        assert!(valid_value(" leading"));
        assert!(valid_value(&"v".repeat(256)));
        assert!(!valid_value(&"v".repeat(257)));
        for v in ["", "trailing ", "a,b", "a=b", "tab\there", "\u{7f}", "é"] {
            assert!(!valid_value(v), "{v:?}");
        }
        for b in 0..=127u8 {
            let c = char::from(b);
            let printable = (0x20..=0x7e).contains(&b) && c != ',' && c != '=';
            assert_eq!(valid_value(&format!("a{c}a")), printable, "{b:#x}");
        }
    }

    #[test]
    fn ows_and_empty_members_are_dropped_members_kept_in_order() {
        assert_eq!(ok(""), "");
        assert_eq!(ok(" , ,\t,"), "");
        assert_eq!(ok("a=1"), "a=1");
        assert_eq!(ok(" a=1 ,\tb= 2\t, ,c=3 "), "a=1,b= 2,c=3");
        let ts = Tracestate::from_fields(["a=1,b=2", "", "c=3"]).unwrap();
        assert_eq!(ts.as_str(), "a=1,b=2,c=3");
        assert_eq!(ts.len(), 3);
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "2"), ("c", "3")]
        );
    }

    #[test]
    fn a_header_that_does_not_parse_is_refused_whole() {
        assert_eq!(
            Tracestate::parse("foo=,bar=3"),
            Err(TracestateError::InvalidMember { index: 0 })
        );
        assert_eq!(
            Tracestate::parse("bar=3,@foo=1"),
            Err(TracestateError::InvalidMember { index: 1 })
        );
        assert_eq!(
            Tracestate::parse("a=1,b=2,a=3"),
            Err(TracestateError::DuplicateKey { index: 2 })
        );
        for bad in ["novalue", "=v", "k==v", "k=v=w", "K=v", "k=a\tb"] {
            assert!(Tracestate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn thirty_two_members_parse_thirty_three_do_not() {
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v{i}")).collect();
        let ts = Tracestate::parse(&members[..32].join(",")).unwrap();
        assert_eq!(ts.len(), 32);
        assert_eq!(
            Tracestate::from_fields(
                members
                    .chunks(9)
                    .map(|c| c.join(","))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
            ),
            Err(TracestateError::TooManyMembers)
        );
        // empty members do not count
        let padded = format!("{},,,, ,", members[..32].join(", ,"));
        assert_eq!(Tracestate::parse(&padded).unwrap().len(), 32);
    }

    #[test]
    fn the_longest_members_fit() {
        // 32 distinct 256-character keys (a 2-digit prefix, 239 characters, `@`, 14) with
        // 256-character values
        let members: Vec<String> = (0..32)
            .map(|i| {
                format!(
                    "{i:02}{}@{}={}",
                    "t".repeat(239),
                    "s".repeat(14),
                    "~".repeat(256)
                )
            })
            .collect();
        assert!(members.iter().all(|m| m.len() == 256 + 1 + 256));
        let header = members.join(",");
        let ts = Tracestate::parse(&header).unwrap();
        assert_eq!(ts.as_str(), header);
        assert_eq!(ts.len(), 32);
    }

    #[test]
    fn the_sdk_gets_the_members_it_accepts() {
        let ts = Tracestate::parse("foo@@bar=1,bar=2,a@b@c=3,ok=4").unwrap();
        assert_eq!(ts.to_sdk().0.header(), "bar=2,ok=4");
        assert_eq!(ts.to_sdk().1, Handed(0b1010));
        let ts = Tracestate::parse("a=1,b=2").unwrap();
        assert_eq!(ts.to_sdk().0.header(), "a=1,b=2");
        assert_eq!(Tracestate::default().to_sdk().0, TraceState::NONE);
    }

    #[test]
    fn sdk_changes_merge_into_the_full_list() {
        let ts = Tracestate::parse("x@@y=1,a=1,b=2,c=3").unwrap();
        let (sdk, handed) = ts.to_sdk();
        assert_eq!(sdk.header(), "a=1,b=2,c=3");
        // unchanged
        assert!(ts.unchanged(handed, &sdk));
        assert_eq!(ts.merged(handed, &sdk), ts);
        // a sampler updates b and adds s
        let now = sdk.insert("b", "9").unwrap().insert("s", "new").unwrap();
        assert!(!ts.unchanged(handed, &now));
        assert_eq!(ts.merged(handed, &now).as_str(), "s=new,b=9,x@@y=1,a=1,c=3");
        // a deletion of a member the SDK held is honoured; the one it could not hold stays
        let now = sdk.delete("a").unwrap();
        assert!(!ts.unchanged(handed, &now));
        assert_eq!(ts.merged(handed, &now).as_str(), "x@@y=1,b=2,c=3");
        // a list emptied in the process keeps the members the SDK never held
        assert!(!ts.unchanged(handed, &TraceState::NONE));
        assert_eq!(ts.merged(handed, &TraceState::NONE).as_str(), "x@@y=1");
        // an update to a value Level 2 refuses (the SDK takes an empty one): the member goes,
        // never its stale value
        let now = sdk.insert("b", "").unwrap();
        assert_eq!(ts.merged(handed, &now).as_str(), "x@@y=1,a=1,c=3");
        assert_eq!(Tracestate::from_sdk(&now).as_str(), "a=1,c=3");
        // the same members in another order is a change
        let reordered = TraceState::from_key_value([("b", "2"), ("a", "1"), ("c", "3")]).unwrap();
        assert!(!ts.unchanged(handed, &reordered));
    }

    #[test]
    fn handed_all_counts_the_members() {
        assert!(Handed(u32::MAX).all(32));
        assert!(Handed(0b111).all(3));
        assert!(!Handed(0b101).all(3));
        assert!(Handed(0).all(0));
        assert!(!Handed(u32::MAX >> 1).all(32));
        let ts = Tracestate::parse("foo@@bar=1,bar=2").unwrap();
        assert!(!ts.to_sdk().1.all(ts.len()));
        let ts = Tracestate::parse("a=1,bar=2").unwrap();
        assert!(ts.to_sdk().1.all(ts.len()));
    }

    #[test]
    fn from_sdk_keeps_only_what_level_2_allows() {
        let sdk =
            TraceState::from_key_value([("a", ""), ("b", "ok"), ("c", "é"), ("d", "x ")]).unwrap();
        assert_eq!(Tracestate::from_sdk(&sdk).as_str(), "b=ok");
    }
}
