//! Per-camera uids (`nvr run --ingest-uids`): started as root, the supervisor runs each
//! camera's ingest under a uid and gid of its own, `first + stream id`, with no supplementary
//! groups. Two ingests then share nothing the kernel grants by identity: neither can signal,
//! trace or read the other's `/proc` entries, nor open a file the other created.
//!
//! The range must be unassigned: a uid or gid of it in the user or group database, or in
//! `/etc/subuid` or `/etc/subgid` (another user's containers), could belong to a person or a
//! service whose files an ingest would then own. It must also be mapped in the user namespace
//! `nvr run` runs in (a container may map only part of the ids), or no ingest could start.
//! The default stays below systemd's dynamic users (61184 to 65519) for stream ids below 184:
//! a site with more cameras than that, on a system running `DynamicUser=` services, should
//! choose another range.

use nix::unistd::{Gid, Group, Uid, User};

use crate::identity::Identity;
use thiserror::Error;

/// The default range: far above the ids distributions hand out to people (from 1000) and
/// system services (below 1000), and below the 65534 of `nobody`.
pub const DEFAULT: &str = "61000-61999";

/// Largest range accepted: checking that a range is unassigned looks up each id.
pub const MAX_IDS: u32 = 1 << 16;

/// A range of uids (and the gids of the same numbers), one per stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestUids {
    first: u32,
    /// How many ids, at least 1.
    count: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IngestUidsError {
    #[error("{0:?} is not a uid range: expected FIRST-LAST, e.g. {DEFAULT}")]
    Syntax(String),
    #[error("uid range {first}-{last} is empty or reversed")]
    Reversed { first: u32, last: u32 },
    #[error("uid range {first}-{last} includes uid 0 (root)")]
    IncludesRoot { first: u32, last: u32 },
    #[error("uid range {first}-{last} has {count} ids; at most {MAX_IDS}")]
    TooLarge { first: u32, last: u32, count: u64 },
    #[error("uid range {first}-{last} includes {id}, which the kernel treats as no id")]
    IncludesInvalid { first: u32, last: u32, id: u32 },
    #[error(
        "uid range {range} overlaps {file}'s entry {entry:?} (another user's subordinate ids); \
         choose an unassigned range with --ingest-uids"
    )]
    Subordinate {
        range: String,
        file: &'static str,
        entry: String,
    },
    #[error(
        "uid range {range} is not mapped in this user namespace ({file}: {map:?}); \
         choose a mapped range with --ingest-uids"
    )]
    Unmapped {
        range: String,
        file: &'static str,
        map: String,
    },
    #[error(
        "uid range {range} is not free: {kind} {id} belongs to {name:?} in the {kind} database; \
         choose an unassigned range with --ingest-uids"
    )]
    Assigned {
        range: String,
        kind: &'static str,
        id: u32,
        name: String,
    },
    #[error("cannot look up {kind} {id}: {source}")]
    Lookup {
        kind: &'static str,
        id: u32,
        source: nix::Error,
    },
    #[error(
        "stream id {stream_id} has no uid in --ingest-uids {range} (it holds stream ids 0 to {last_stream_id}); \
         give a larger range"
    )]
    OutOfRange {
        stream_id: i32,
        range: String,
        last_stream_id: u32,
    },
}

impl std::str::FromStr for IngestUids {
    type Err = IngestUidsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || IngestUidsError::Syntax(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(syntax)?;
        let parse = |t: &str| {
            (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
                .then(|| t.parse::<u32>().ok())
                .flatten()
                .ok_or_else(syntax)
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if last < first {
            return Err(IngestUidsError::Reversed { first, last });
        }
        if first == 0 {
            return Err(IngestUidsError::IncludesRoot { first, last });
        }
        for id in [u32::from(u16::MAX), u32::MAX] {
            if (first..=last).contains(&id) {
                return Err(IngestUidsError::IncludesInvalid { first, last, id });
            }
        }
        let count = u64::from(last) - u64::from(first) + 1;
        if count > u64::from(MAX_IDS) {
            return Err(IngestUidsError::TooLarge { first, last, count });
        }
        Ok(IngestUids {
            first,
            count: count as u32,
        })
    }
}

impl std::fmt::Display for IngestUids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last())
    }
}

impl IngestUids {
    fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }

    /// Whether `uid` is one of the range's.
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last()).contains(&uid)
    }

    /// The identity of stream `stream_id`'s ingest.
    pub fn for_stream(&self, stream_id: i32) -> Result<Identity, IngestUidsError> {
        match u32::try_from(stream_id) {
            Ok(i) if i < self.count => Ok(Identity {
                uid: Uid::from_raw(self.first + i),
                gid: Gid::from_raw(self.first + i),
            }),
            _ => Err(IngestUidsError::OutOfRange {
                stream_id,
                range: self.to_string(),
                last_stream_id: self.count - 1,
            }),
        }
    }

    /// Refuses the range if it is not free (see the module docs) or not mapped.
    pub fn check_usable(&self) -> Result<(), IngestUidsError> {
        for file in ["/etc/subuid", "/etc/subgid"] {
            // A missing file assigns nothing.
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(entry) = text.lines().find(|l| self.overlaps_subordinate(l)) {
                return Err(IngestUidsError::Subordinate {
                    range: self.to_string(),
                    file,
                    entry: entry.to_owned(),
                });
            }
        }
        for file in ["/proc/self/uid_map", "/proc/self/gid_map"] {
            let map = std::fs::read_to_string(file).unwrap_or_default();
            if !self.mapped_in(&map) {
                return Err(IngestUidsError::Unmapped {
                    range: self.to_string(),
                    file,
                    map: map.trim().to_owned(),
                });
            }
        }
        self.check_unassigned()
    }

    /// Whether `line` of `/etc/subuid` (`name:first:count`) assigns an id of the range.
    fn overlaps_subordinate(&self, line: &str) -> bool {
        let mut fields = line.trim().split(':').skip(1).map(|f| f.parse::<u64>());
        let (Some(Ok(start)), Some(Ok(count))) = (fields.next(), fields.next()) else {
            return false;
        };
        let (first, last) = (u64::from(self.first), u64::from(self.last()));
        count > 0 && start <= last && first <= start.saturating_add(count - 1)
    }

    /// Whether every id of the range is inside one extent of `map` (`/proc/self/uid_map`
    /// lines: `inside outside count`).
    fn mapped_in(&self, map: &str) -> bool {
        map.lines().any(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            matches!(f[..], [inside, _, count]
                if inside <= u64::from(self.first)
                    && u64::from(self.last()) < inside.saturating_add(count))
        })
    }

    /// Refuses the range if the user or group database names any id of it.
    fn check_unassigned(&self) -> Result<(), IngestUidsError> {
        for id in self.first..=self.last() {
            let lookup = |kind| move |source| IngestUidsError::Lookup { kind, id, source };
            let user = User::from_uid(Uid::from_raw(id)).map_err(lookup("user"))?;
            let group = Group::from_gid(Gid::from_raw(id)).map_err(lookup("group"))?;
            let assigned = user
                .map(|u| ("user", u.name))
                .or(group.map(|g| ("group", g.name)));
            if let Some((kind, name)) = assigned {
                return Err(IngestUidsError::Assigned {
                    range: self.to_string(),
                    kind,
                    id,
                    name,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_range_and_maps_stream_ids_onto_it() {
        let r: IngestUids = "61000-61002".parse().unwrap();
        assert_eq!(r.to_string(), "61000-61002");
        assert_eq!(r.for_stream(0).unwrap().uid.as_raw(), 61000);
        assert_eq!(r.for_stream(2).unwrap().gid.as_raw(), 61002);
        assert!(matches!(
            r.for_stream(3),
            Err(IngestUidsError::OutOfRange {
                last_stream_id: 2,
                ..
            })
        ));
        assert!(r.for_stream(-1).is_err());
        assert!(r.contains(61001) && !r.contains(60999) && !r.contains(61003));
        assert_eq!(DEFAULT.parse::<IngestUids>().unwrap().count, 1000);
    }

    #[test]
    fn refuses_malformed_reversed_rooted_and_huge_ranges() {
        for bad in ["", "61000", "a-b", "-5", "5-", "+1-2", "1-2-3", "1 -2"] {
            assert_eq!(
                bad.parse::<IngestUids>(),
                Err(IngestUidsError::Syntax(bad.into())),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "9-8".parse::<IngestUids>(),
            Err(IngestUidsError::Reversed { .. })
        ));
        assert!(matches!(
            "0-10".parse::<IngestUids>(),
            Err(IngestUidsError::IncludesRoot { .. })
        ));
        assert!(matches!(
            "70000-4294967294".parse::<IngestUids>(),
            Err(IngestUidsError::TooLarge { .. })
        ));
        for invalid in ["65000-65535", "4294967200-4294967295"] {
            assert!(
                matches!(
                    invalid.parse::<IngestUids>(),
                    Err(IngestUidsError::IncludesInvalid { .. })
                ),
                "{invalid}"
            );
        }
    }

    #[test]
    fn subordinate_ids_and_namespace_maps_are_read() {
        let r: IngestUids = "61000-61999".parse().unwrap();
        assert!(r.overlaps_subordinate("alice:61500:10"));
        assert!(r.overlaps_subordinate("bob:60000:1001"));
        assert!(!r.overlaps_subordinate("alice:100000:65536"));
        assert!(!r.overlaps_subordinate("alice:60000:1000"));
        assert!(!r.overlaps_subordinate("garbage"));
        assert!(r.mapped_in("         0          0 4294967295\n"));
        assert!(r.mapped_in("0 100000 65536\n"));
        assert!(!r.mapped_in("0 100000 61500\n"));
        assert!(!r.mapped_in(""));
    }

    #[test]
    fn a_range_holding_an_assigned_id_is_refused_naming_it() {
        let Some(nobody) = User::from_name("nobody").unwrap() else {
            eprintln!("SKIPPED: no user nobody in the user database");
            return;
        };
        let uid = nobody.uid.as_raw();
        let r: IngestUids = format!("{}-{}", uid - 2, uid).parse().unwrap();
        match r.check_unassigned() {
            Err(IngestUidsError::Assigned { id, kind, .. }) => {
                assert!(r.contains(id), "{kind} {id}")
            }
            other => panic!("{other:?}"),
        }
    }
}
