//! Port ranges as longest-prefix-match entries: turns a function over the
//! 16-bit port space, given as intervals, into the fewest (port, prefix
//! length, value) entries that give the same value for every port under
//! longest-prefix match. This is the ORTC construction (Draves, King,
//! Venkatachary, Zill: "Constructing optimal IP routing tables", INFOCOM
//! 1999) on a binary trie of the port's bits: nested prefixes let a range
//! like "everything but port 80" take two entries instead of sixteen.

/// Number of bits of a port.
const BITS: u8 = 16;
/// Size of the port space.
const SPACE: u32 = 1 << BITS;

/// One longest-prefix-match entry: ports whose first `len` bits equal `port`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortPrefix<V> {
    pub(crate) port: u16,
    pub(crate) len: u8,
    pub(crate) value: V,
}

/// A trie node over `[start, start + 2^(16 - len))`.
struct Node {
    start: u32,
    len: u8,
    children: Option<(usize, usize)>,
    /// ORTC's candidate set: value ids, sorted.
    candidates: Vec<u32>,
}

/// The minimal prefix entries for the function that is `intervals[i].1` on
/// `[intervals[i].0, intervals[i + 1].0)`. `intervals` must start at 0 and be
/// strictly ascending. The result always holds the /0 entry (so the prefixes
/// cover every port) and is sorted by (port, len).
pub(crate) fn to_prefixes<V: Copy + Eq>(intervals: &[(u16, V)]) -> Vec<PortPrefix<V>> {
    debug_assert!(intervals.first().is_some_and(|&(start, _)| start == 0));
    debug_assert!(intervals.windows(2).all(|w| w[0].0 < w[1].0));

    // Value ids in order of first appearance, so ties resolve the same way
    // every time.
    let mut values: Vec<V> = Vec::new();
    let starts: Vec<(u32, u32)> = intervals
        .iter()
        .map(|&(start, v)| {
            let id = match values.iter().position(|&x| x == v) {
                Some(i) => i,
                None => {
                    values.push(v);
                    values.len() - 1
                }
            };
            (u32::from(start), id as u32)
        })
        .collect();

    // Passes 1 and 2: the trie with leaves that hold one value, and
    // bottom-up candidate sets (intersection if not empty, else union).
    let mut nodes = Vec::new();
    let root = build(&starts, 0, 0, &mut nodes);

    // Pass 3: top-down, a node needs an entry only when the value it
    // inherits is not one of its candidates.
    let mut out = Vec::new();
    emit(&nodes, root, None, &values, &mut out);
    out
}

fn build(starts: &[(u32, u32)], start: u32, len: u8, nodes: &mut Vec<Node>) -> usize {
    let end = start + (SPACE >> len);
    // The interval holding `start`, and whether it reaches the end of this node.
    let i = starts.partition_point(|&(s, _)| s <= start) - 1;
    let uniform = starts.get(i + 1).is_none_or(|&(next, _)| next >= end);
    let node = if uniform {
        Node {
            start,
            len,
            children: None,
            candidates: vec![starts[i].1],
        }
    } else {
        let half = SPACE >> (len + 1);
        let left = build(starts, start, len + 1, nodes);
        let right = build(starts, start + half, len + 1, nodes);
        let (a, b) = (&nodes[left].candidates, &nodes[right].candidates);
        let both: Vec<u32> = a.iter().copied().filter(|x| b.contains(x)).collect();
        let candidates = if both.is_empty() {
            let mut union: Vec<u32> = a.iter().chain(b).copied().collect();
            union.sort_unstable();
            union.dedup();
            union
        } else {
            both
        };
        Node {
            start,
            len,
            children: Some((left, right)),
            candidates,
        }
    };
    nodes.push(node);
    nodes.len() - 1
}

fn emit<V: Copy>(
    nodes: &[Node],
    at: usize,
    inherited: Option<u32>,
    values: &[V],
    out: &mut Vec<PortPrefix<V>>,
) {
    let node = &nodes[at];
    let chosen = match inherited {
        Some(v) if node.candidates.contains(&v) => v,
        _ => {
            let v = node.candidates[0];
            out.push(PortPrefix {
                port: node.start as u16,
                len: node.len,
                value: values[v as usize],
            });
            v
        }
    };
    if let Some((left, right)) = node.children {
        emit(nodes, left, Some(chosen), values, out);
        emit(nodes, right, Some(chosen), values, out);
    }
}

/// Whether `port` is inside the prefix (`port`, `len`).
pub(crate) fn prefix_contains(prefix_port: u16, len: u8, port: u16) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u16::MAX << (BITS - len);
    port & mask == prefix_port & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value longest-prefix match gives for `port`.
    fn lpm<V: Copy>(prefixes: &[PortPrefix<V>], port: u16) -> V {
        prefixes
            .iter()
            .filter(|p| prefix_contains(p.port, p.len, port))
            .max_by_key(|p| p.len)
            .expect("the /0 entry covers every port")
            .value
    }

    fn check(intervals: &[(u16, char)]) -> Vec<PortPrefix<char>> {
        let prefixes = to_prefixes(intervals);
        for port in 0..=u16::MAX {
            let i = intervals.partition_point(|&(s, _)| s <= port) - 1;
            assert_eq!(lpm(&prefixes, port), intervals[i].1, "port {port}");
        }
        let mut sorted = prefixes.clone();
        sorted.sort_by_key(|p| (p.port, p.len));
        assert_eq!(sorted, prefixes, "emitted in (port, len) order");
        prefixes
    }

    #[test]
    fn one_value_is_one_entry() {
        assert_eq!(check(&[(0, 'a')]).len(), 1);
    }

    #[test]
    fn a_single_port_costs_one_entry_over_the_background() {
        assert_eq!(check(&[(0, 'd'), (80, 'a'), (81, 'd')]).len(), 2);
        assert_eq!(check(&[(0, 'd'), (65535, 'a')]).len(), 2);
        assert_eq!(check(&[(0, 'a'), (1, 'd')]).len(), 2);
    }

    #[test]
    fn everything_but_one_port_is_two_entries() {
        let p = check(&[(0, 'a'), (8080, 'd'), (8081, 'a')]);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].len, p[0].value), (0, 'a'));
    }

    #[test]
    fn aligned_ranges_are_single_prefixes() {
        // 1024..=2047 is 0b0000_01xx_xxxx_xxxx: one /6.
        let p = check(&[(0, 'd'), (1024, 'a'), (2048, 'd')]);
        assert_eq!(p.len(), 2);
        assert!(p.contains(&PortPrefix {
            port: 1024,
            len: 6,
            value: 'a'
        }));
    }

    #[test]
    fn ranges_and_several_values_stay_exact() {
        check(&[
            (0, 'd'),
            (53, 'a'),
            (54, 'd'),
            (8000, 'b'),
            (9000, 'a'),
            (65000, 'c'),
        ]);
        check(&[(0, 'a'), (1, 'b'), (2, 'c'), (3, 'a'), (65534, 'b')]);
    }
}
