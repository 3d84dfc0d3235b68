//! [`ClientSlots`]: a bounded number of things held at once (long-polls), in total and per
//! client address, so one client cannot take every slot. A slot is a guard released on drop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Slots in use, in total and per client.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A bounded set of slots shared by every client.
#[derive(Debug, Clone)]
pub struct ClientSlots {
    max_total: usize,
    max_per_client: usize,
    held: Arc<Mutex<Held>>,
}

/// Why a slot was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// Every slot is taken.
    Total(usize),
    /// This client holds its share.
    PerClient(usize),
}

/// A slot held until dropped.
#[derive(Debug)]
pub struct Slot {
    client: IpAddr,
    held: Arc<Mutex<Held>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            held.total = held.total.saturating_sub(1);
            if let Some(n) = held.by_client.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    held.by_client.remove(&self.client);
                }
            }
        }
    }
}

impl ClientSlots {
    /// At most `max_total` slots, `max_per_client` of them per client address.
    pub fn new(max_total: usize, max_per_client: usize) -> ClientSlots {
        ClientSlots {
            max_total,
            max_per_client,
            held: Arc::new(Mutex::new(Held::default())),
        }
    }

    /// Take a slot for `client`, or say which bound refuses it.
    pub fn try_take(&self, client: IpAddr) -> Result<Slot, SlotRefusal> {
        let Ok(mut held) = self.held.lock() else {
            return Err(SlotRefusal::Total(self.max_total));
        };
        if held.total >= self.max_total {
            return Err(SlotRefusal::Total(self.max_total));
        }
        let mine = held.by_client.entry(client).or_insert(0);
        if *mine >= self.max_per_client {
            return Err(SlotRefusal::PerClient(self.max_per_client));
        }
        *mine += 1;
        held.total += 1;
        Ok(Slot {
            client,
            held: self.held.clone(),
        })
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-client bound stops one client before the total; the total stops everyone;
    /// dropping a slot gives it back.
    #[test]
    fn bounds_per_client_and_in_total() {
        let slots = ClientSlots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert_eq!(slots.try_take(a).unwrap_err(), SlotRefusal::PerClient(2));
        let _b1 = slots.try_take(b).unwrap();
        assert_eq!(slots.try_take(c).unwrap_err(), SlotRefusal::Total(3));
        drop(a1);
        assert_eq!(slots.held(), 2);
        let _c1 = slots.try_take(c).unwrap();
        assert_eq!(slots.held(), 3);
    }
}
