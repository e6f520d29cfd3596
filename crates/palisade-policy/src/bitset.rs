//! A growable set of small integers (identity locals) stored as bits, so that
//! selectors can be evaluated for all identities of a tenant at once with word
//! operations instead of one label lookup per identity.

/// A set of `u16` values (identity locals), one bit each.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    /// The empty set.
    pub(crate) fn new() -> Bitset {
        Bitset::default()
    }

    /// Adds `bit`; returns whether it was absent.
    pub(crate) fn insert(&mut self, bit: u16) -> bool {
        let (word, mask) = (usize::from(bit) / 64, 1u64 << (bit % 64));
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let absent = self.words[word] & mask == 0;
        self.words[word] |= mask;
        absent
    }

    /// Removes `bit`; returns whether it was present.
    pub(crate) fn remove(&mut self, bit: u16) -> bool {
        let (word, mask) = (usize::from(bit) / 64, 1u64 << (bit % 64));
        match self.words.get_mut(word) {
            Some(w) if *w & mask != 0 => {
                *w &= !mask;
                true
            }
            _ => false,
        }
    }

    /// Whether `bit` is in the set.
    pub(crate) fn contains(&self, bit: u16) -> bool {
        let (word, mask) = (usize::from(bit) / 64, 1u64 << (bit % 64));
        self.words.get(word).is_some_and(|w| w & mask != 0)
    }

    /// Adds every member of `other`.
    pub(crate) fn union_with(&mut self, other: &Bitset) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Keeps only members also in `other`.
    pub(crate) fn intersect_with(&mut self, other: &Bitset) {
        for (i, a) in self.words.iter_mut().enumerate() {
            *a &= other.words.get(i).copied().unwrap_or(0);
        }
    }

    /// Removes every member of `other`.
    pub(crate) fn subtract(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    /// The members in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                // Words are indexed by `bit / 64` of a u16, so this fits.
                Some((i * 64) as u16 + bit as u16)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_match_a_btreeset() {
        let mut a = Bitset::new();
        for b in [0, 5, 63, 64, 65535] {
            assert!(a.insert(b));
        }
        assert!(!a.insert(5));
        let mut b = Bitset::new();
        for x in [5, 64, 700] {
            b.insert(x);
        }
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(u.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 700, 65535]);
        let mut i = a.clone();
        i.intersect_with(&b);
        assert_eq!(i.iter().collect::<Vec<_>>(), [5, 64]);
        let mut d = a.clone();
        d.subtract(&b);
        assert_eq!(d.iter().collect::<Vec<_>>(), [0, 63, 65535]);
        assert!(d.remove(63));
        assert!(!d.remove(63));
        assert!(!d.contains(63) && d.contains(65535));
    }
}
