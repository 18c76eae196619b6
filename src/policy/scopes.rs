//! Scopes with implications (`write: [read]` means a key holding `write` may call
//! `read` routes). The closure is computed once at start, so a check is a set lookup.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Default)]
pub struct ScopeSet {
    /// Scope → every scope it grants, itself included.
    grants: HashMap<String, HashSet<String, crate::FastHash>, crate::FastHash>,
}

impl ScopeSet {
    /// From config's scope → directly implied scopes.
    pub fn new(direct: &BTreeMap<String, Vec<String>>) -> Self {
        let mut grants = HashMap::default();
        for scope in direct.keys() {
            let mut seen = HashSet::default();
            let mut todo = vec![scope.clone()];
            while let Some(s) = todo.pop() {
                if seen.insert(s.clone())
                    && let Some(next) = direct.get(&s)
                {
                    todo.extend(next.iter().cloned());
                }
            }
            grants.insert(scope.clone(), seen);
        }
        ScopeSet { grants }
    }

    pub fn is_known(&self, scope: &str) -> bool {
        self.grants.contains_key(scope)
    }

    /// Whether holding `held` allows a route needing `needed`.
    pub fn allows<S: AsRef<str>>(&self, held: &[S], needed: &str) -> bool {
        held.iter().any(|h| {
            self.grants
                .get(h.as_ref())
                .is_some_and(|g| g.contains(needed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implications_are_transitive() {
        let mut d = BTreeMap::new();
        d.insert("read".to_string(), vec![]);
        d.insert("write".to_string(), vec!["read".to_string()]);
        d.insert("admin".to_string(), vec!["write".to_string()]);
        let s = ScopeSet::new(&d);
        assert!(s.allows(&["write"], "read"));
        assert!(s.allows(&["admin"], "read"));
        assert!(!s.allows(&["read"], "write"));
        assert!(!s.allows(&["unknown"], "read"));
        assert!(!s.allows::<&str>(&[], "read"));
    }
}
