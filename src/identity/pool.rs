//! Sharing the strings of cached tokens.
//!
//! Tokens from one tenant repeat the same issuer, audience, tenant, roles, scopes, agent
//! and blueprint ids; without sharing, every cached token holds its own copy of each (about
//! half a kilobyte). The pool hands out one `Arc<str>` per distinct string. It is used only
//! when a verified token enters the cache (after an RS256 verification), never on a cache
//! hit, and it stops growing at its capacity, after which strings are kept as they are. It
//! is sharded (dashmap): no lock is shared by every worker.

use super::VerifiedToken;
use dashmap::DashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A bounded set of shared strings.
#[derive(Debug)]
pub struct StringPool {
    strings: DashSet<Arc<str>>,
    /// Strings pooled so far (the set's own length sums every shard).
    pooled: AtomicUsize,
    capacity: usize,
}

impl StringPool {
    /// A pool that holds at most `capacity` distinct strings.
    pub fn new(capacity: usize) -> Self {
        Self {
            strings: DashSet::new(),
            pooled: AtomicUsize::new(0),
            capacity,
        }
    }

    /// The pooled copy of `s` (pooling it if there is room), else `s` itself.
    pub fn share(&self, s: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.key().clone();
        }
        if self.pooled.load(Ordering::Relaxed) < self.capacity && self.strings.insert(s.clone()) {
            self.pooled.fetch_add(1, Ordering::Relaxed);
        }
        s.clone()
    }

    /// Replaces every string of `token` with its pooled copy.
    pub fn share_token(&self, token: &mut VerifiedToken) {
        let share = |s: &mut Arc<str>| *s = self.share(s);
        let c = &mut token.caller;
        share(&mut c.tenant);
        share(&mut c.actor_id);
        share(&mut c.subject_id);
        if let Some(bp) = &mut c.blueprint_id {
            share(bp);
        }
        share(&mut token.issuer);
        share(&mut token.audience);
        share(&mut token.kid);
        if let Some(idtyp) = &mut token.idtyp {
            share(idtyp);
        }
        token.scopes.iter_mut().for_each(share);
        token.roles.iter_mut().for_each(share);
        token.scopes.shrink_to_fit();
        token.roles.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation_until_the_pool_is_full() {
        let pool = StringPool::new(2);
        let a1: Arc<str> = Arc::from("tenant");
        let a2: Arc<str> = Arc::from("tenant");
        assert!(!Arc::ptr_eq(&a1, &a2));
        let s1 = pool.share(&a1);
        let s2 = pool.share(&a2);
        assert!(Arc::ptr_eq(&s1, &s2));
        let issuer = pool.share(&Arc::from("issuer"));
        assert!(Arc::ptr_eq(&pool.share(&Arc::from("issuer")), &issuer));
        // Full: a new string is kept as it is, and never pooled later.
        let late: Arc<str> = Arc::from("audience");
        assert!(Arc::ptr_eq(&pool.share(&late), &late));
        let again: Arc<str> = Arc::from("audience");
        assert!(Arc::ptr_eq(&pool.share(&again), &again));
    }
}
