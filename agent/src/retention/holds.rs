//! Legal holds as the API shows them, and the set of holds in force, gathered from the hold
//! entries of this region's log and of every log it witnesses.

use knhk_core::receipt::{HoldPlaced, HoldReleased, HoldSelector, LogEntry, Receipt};
use serde::{Deserialize, Serialize};

/// A hold entry as shown in `GET /v1/receipts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    /// `placed` or `released`.
    pub action: String,
    /// Hold id.
    pub hold_id: String,
    /// Reason.
    pub reason: String,
    /// When, ns.
    pub time_ns: u64,
    /// What it pins (placements only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<HoldSelector>,
    /// End date, ns (placements only, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ns: Option<u64>,
}

impl HoldView {
    /// The view of a hold entry (other entries give an empty `action`).
    pub fn of(entry: &LogEntry) -> HoldView {
        match entry {
            LogEntry::HoldPlaced(h) => HoldView {
                action: "placed".to_owned(),
                hold_id: h.hold_id.clone(),
                reason: h.reason.clone(),
                time_ns: h.time_ns,
                selector: Some(h.selector),
                until_ns: h.until_ns,
            },
            LogEntry::HoldReleased(h) => HoldView {
                action: "released".to_owned(),
                hold_id: h.hold_id.clone(),
                reason: h.reason.clone(),
                time_ns: h.time_ns,
                selector: None,
                until_ns: None,
            },
            _ => HoldView {
                action: String::new(),
                hold_id: String::new(),
                reason: String::new(),
                time_ns: 0,
                selector: None,
                until_ns: None,
            },
        }
    }
}

/// A release of a hold, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Leaf index of the release entry.
    pub leaf_index: u64,
    /// When, ns.
    pub time_ns: u64,
    /// Why.
    pub reason: String,
}

/// One hold with its state, as `GET /v1/holds` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Origin of the log that holds the placement entry.
    pub origin: String,
    /// Leaf index of the placement entry.
    pub leaf_index: u64,
    /// Hold id.
    pub hold_id: String,
    /// Reason.
    pub reason: String,
    /// What it pins (in JSON `{"by": "time" | "leaves" | "epochs", …}`, half-open ranges; a
    /// receipt id is its leaf index; a rollout is held through its config epochs).
    pub selector: HoldSelector,
    /// When placed, ns.
    pub placed_ns: u64,
    /// End date, ns.
    pub until_ns: Option<u64>,
    /// The release, if released.
    pub released: Option<Release>,
}

impl Hold {
    /// In force at `now_ns`: not released and not past its end date.
    pub fn active(&self, now_ns: u64) -> bool {
        self.released.is_none() && !matches!(self.until_ns, Some(u) if u <= now_ns)
    }

    /// Whether it pins the receipt at leaf `index` of log `origin`.
    pub fn pins(&self, origin: &str, index: u64, receipt: &Receipt) -> bool {
        self.selector.covers(index, receipt, origin == self.origin)
    }
}

/// Fold the hold entries `(leaf index, bytes)` of log `origin` into holds.
pub fn collect(origin: &str, entries: &[(u64, Vec<u8>)], out: &mut Vec<Hold>) {
    let first = out.len();
    for (index, bytes) in entries {
        match LogEntry::decode(bytes) {
            Ok(LogEntry::HoldPlaced(HoldPlaced {
                time_ns,
                hold_id,
                reason,
                selector,
                until_ns,
            })) => out.push(Hold {
                origin: origin.to_owned(),
                leaf_index: *index,
                hold_id,
                reason,
                selector,
                placed_ns: time_ns,
                until_ns,
                released: None,
            }),
            Ok(LogEntry::HoldReleased(HoldReleased {
                time_ns,
                hold_id,
                reason,
            })) => {
                if let Some(h) = out[first..]
                    .iter_mut()
                    .find(|h| h.hold_id == hold_id && h.released.is_none())
                {
                    h.released = Some(Release {
                        leaf_index: *index,
                        time_ns,
                        reason,
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::receipt::LogEntry;

    fn place(id: &str, selector: HoldSelector, until_ns: Option<u64>) -> Vec<u8> {
        LogEntry::HoldPlaced(HoldPlaced {
            time_ns: 1,
            hold_id: id.into(),
            reason: "r".into(),
            selector,
            until_ns,
        })
        .encode()
        .unwrap()
    }

    /// Releases close the open hold of the same id; end dates lapse holds; leaf holds pin only
    /// the placing log, epoch holds every log.
    #[test]
    fn holds_fold_and_pin() {
        let release = LogEntry::HoldReleased(HoldReleased {
            time_ns: 2,
            hold_id: "a".into(),
            reason: "done".into(),
        })
        .encode()
        .unwrap();
        let entries = vec![
            (3, place("a", HoldSelector::Epochs { from: 1, to: 2 }, None)),
            (
                4,
                place("b", HoldSelector::Leaves { from: 0, to: 10 }, Some(100)),
            ),
            (5, release),
        ];
        let mut holds = Vec::new();
        collect("knhk.test/eu", &entries, &mut holds);
        assert_eq!(holds.len(), 2);
        assert!(!holds[0].active(50));
        assert_eq!(holds[0].released.as_ref().unwrap().leaf_index, 5);
        assert!(holds[1].active(99) && !holds[1].active(100));
        let mut r = crate::receipts::store::tests::sample(7);
        r.config_epoch = 1;
        assert!(holds[0].pins("knhk.test/us", 7, &r));
        assert!(holds[1].pins("knhk.test/eu", 7, &r));
        assert!(!holds[1].pins("knhk.test/us", 7, &r));
    }
}
