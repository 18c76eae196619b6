//! A small map a thread keeps in front of a shared cache: bounded, and emptied at
//! once when the bound is reached (no eviction bookkeeping on the read path). What
//! an entry may be served for is the owner's rule: the key resolver's memo, the org
//! cache's and the identity header values each check their own freshness.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub struct Memo<K, V> {
    max: usize,
    entries: HashMap<K, V, crate::FastHash>,
}

impl<K: Hash + Eq, V> Memo<K, V> {
    /// A memo of at most `max` entries.
    pub fn new(max: usize) -> Self {
        Memo {
            max,
            entries: HashMap::default(),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key)
    }

    /// Adds an entry; a full memo is emptied first.
    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.max {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_memo_is_emptied_before_the_next_entry() {
        let mut m = Memo::new(2);
        m.insert("a", 1);
        m.insert("b", 2);
        assert_eq!((m.len(), m.get("a")), (2, Some(&1)));
        m.insert("c", 3);
        assert_eq!((m.len(), m.get("a"), m.get("c")), (1, None, Some(&3)));
        m.clear();
        assert!(m.is_empty());
    }
}
