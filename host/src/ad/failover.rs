//! Which domain controller to try next: the order of preference, the sticky current one, and
//! what a failed attempt says. Pure: no network, so the policy is tested on its own.

/// Why a (re)connection starts where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first connection: the most preferred DC first.
    Preferred,
    /// The current DC's connection dropped: the next one first, the current one last.
    AfterCurrent,
}

/// The domain controllers in order of preference and the one in use. Once a DC answers it
/// stays in use (sticky) until it fails; the list is not walked back to the preferred DC,
/// so a DC that flaps does not make every cycle switch twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcList {
    urls: Vec<String>,
    current: usize,
}

impl DcList {
    pub fn new(urls: Vec<String>) -> DcList {
        DcList { urls, current: 0 }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The DC in use (or, before the first success, the one tried first).
    pub fn current(&self) -> Option<&str> {
        self.urls.get(self.current).map(String::as_str)
    }

    pub fn current_index(&self) -> usize {
        self.current
    }

    /// The indexes to try, in order: every DC once, starting where `start` says.
    pub fn attempts(&self, start: Start) -> Vec<usize> {
        let n = self.urls.len();
        if n == 0 {
            return Vec::new();
        }
        let first = match start {
            Start::Preferred => 0,
            Start::AfterCurrent => (self.current + 1) % n,
        };
        (0..n).map(|k| (first + k) % n).collect()
    }

    /// Records the DC that answered; returns true when that is a switch.
    pub fn settle(&mut self, index: usize) -> bool {
        let switched = index != self.current;
        if index < self.urls.len() {
            self.current = index;
        }
        switched
    }

    /// Replaces the list (a fresh DNS answer), keeping the current DC if it is still listed.
    pub fn replace(&mut self, urls: Vec<String>) {
        let keep = self
            .current()
            .and_then(|cur| urls.iter().position(|u| u.eq_ignore_ascii_case(cur)));
        self.urls = urls;
        self.current = keep.unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> DcList {
        DcList::new((0..n).map(|i| format!("ldaps://dc{i}")).collect())
    }

    #[test]
    fn first_connection_tries_in_order_of_preference() {
        assert_eq!(list(3).attempts(Start::Preferred), vec![0, 1, 2]);
        assert_eq!(list(1).attempts(Start::Preferred), vec![0]);
        assert!(list(0).attempts(Start::Preferred).is_empty());
        assert_eq!(list(0).current(), None);
    }

    #[test]
    fn a_dropped_connection_moves_on_and_tries_the_dropped_dc_last() {
        let mut l = list(3);
        assert_eq!(l.attempts(Start::AfterCurrent), vec![1, 2, 0]);
        assert!(l.settle(1));
        assert_eq!(l.current(), Some("ldaps://dc1"));
        assert_eq!(l.attempts(Start::AfterCurrent), vec![2, 0, 1]);
        // one DC: the same again
        assert_eq!(list(1).attempts(Start::AfterCurrent), vec![0]);
    }

    #[test]
    fn the_dc_in_use_is_sticky() {
        let mut l = list(3);
        // dc0 dead at start: dc1 answers and stays in use
        assert!(l.settle(1));
        // a later reconnect of a healthy list does not go back to dc0 first ...
        assert_eq!(l.current_index(), 1);
        // ... and settling on the same DC again is not a switch
        assert!(!l.settle(1));
        // when dc1 drops, dc2 is next, then dc0 (wrapping around)
        assert_eq!(l.attempts(Start::AfterCurrent), vec![2, 0, 1]);
        assert!(l.settle(0));
        assert_eq!(l.current(), Some("ldaps://dc0"));
    }

    #[test]
    fn a_new_list_keeps_the_current_dc_when_it_is_still_there() {
        let mut l = list(3);
        l.settle(2);
        l.replace(vec!["ldaps://DC2".into(), "ldaps://dc9".into()]);
        assert_eq!(l.current_index(), 0);
        l.settle(1);
        l.replace(vec!["ldaps://dc0".into()]);
        assert_eq!(l.current(), Some("ldaps://dc0"));
    }
}
