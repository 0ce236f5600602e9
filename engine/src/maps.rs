//! `Maps`: a shard's maps by name, with the `default` map (every plain Redis command's) in a
//! field of its own so that its lookup is a 7-byte comparison instead of a `BTreeMap` search.
//! Iteration is in name order, `default` included, as with one `BTreeMap`.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::map::Map;
use crate::DEFAULT_MAP;

/// True when `name` is `DEFAULT_MAP` (a fixed-size comparison, no `memcmp` call).
fn is_default(name: &[u8]) -> bool {
    <[u8; 7]>::try_from(name).is_ok_and(|n| n == *b"default")
}

const _: () = assert!(DEFAULT_MAP.len() == 7);

/// The maps of one shard by name.
#[derive(Debug, Default)]
pub(crate) struct Maps {
    default: Option<(Bytes, Map)>,
    /// Every map but `default`.
    others: BTreeMap<Bytes, Map>,
}

impl Maps {
    pub fn get(&self, name: &[u8]) -> Option<&Map> {
        if is_default(name) {
            self.default.as_ref().map(|(_, m)| m)
        } else {
            self.others.get(name)
        }
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut Map> {
        if is_default(name) {
            self.default.as_mut().map(|(_, m)| m)
        } else {
            self.others.get_mut(name)
        }
    }

    pub fn get_key_value(&self, name: &[u8]) -> Option<(&Bytes, &Map)> {
        if is_default(name) {
            self.default.as_ref().map(|(n, m)| (n, m))
        } else {
            self.others.get_key_value(name)
        }
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Inserts (or replaces) the map called `name`.
    pub fn insert(&mut self, name: Bytes, map: Map) {
        if is_default(&name) {
            self.default = Some((name, map));
        } else {
            self.others.insert(name, map);
        }
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Map> {
        if is_default(name) {
            self.default.take().map(|(_, m)| m)
        } else {
            self.others.remove(name)
        }
    }

    pub fn clear(&mut self) {
        self.default = None;
        self.others.clear();
    }

    pub fn len(&self) -> usize {
        self.others.len() + usize::from(self.default.is_some())
    }

    /// Maps in name order from `lo` on.
    pub fn range_from<'a>(
        &'a self,
        lo: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Map)> + 'a {
        let d = DEFAULT_MAP;
        // Does the range include the name `default`?
        let with_default = match lo {
            Bound::Included(x) => x <= d,
            Bound::Excluded(x) => x < d,
            Bound::Unbounded => true,
        };
        // Names below `default` (only when the range starts at or below it), `default`, the
        // names above it that are in the range.
        let below = with_default
            .then(|| self.others.range::<[u8], _>((lo, Bound::Excluded(d))))
            .into_iter()
            .flatten();
        let default = self
            .default
            .as_ref()
            .filter(|_| with_default)
            .map(|(n, m)| (n, m));
        let above_lo = if with_default { Bound::Excluded(d) } else { lo };
        let above = self.others.range::<[u8], _>((above_lo, Bound::Unbounded));
        below.chain(default).chain(above)
    }

    /// Every map in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Map)> {
        self.range_from(Bound::Unbounded)
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.iter().map(|(n, _)| n)
    }

    /// Every map (in no particular order).
    pub fn values(&self) -> impl Iterator<Item = &Map> {
        self.default
            .iter()
            .map(|(_, m)| m)
            .chain(self.others.values())
    }

    /// Every map (in no particular order).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Map> {
        self.default
            .iter_mut()
            .map(|(_, m)| m)
            .chain(self.others.values_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapConfig;
    use crate::map::Layout;

    fn map() -> Map {
        Map::new(
            b"m",
            MapConfig::default(),
            Layout {
                table_bytes_min: 256,
                table_bytes_max: 1024,
                outline_bytes_min: 200,
                colliding_hash: false,
            },
        )
    }

    #[test]
    fn iterates_in_name_order_with_default_among_the_others() {
        let names: [&[u8]; 7] = [b"", b"a", b"defaul", b"default", b"default\0", b"e", b"z"];
        let mut maps = Maps::default();
        // Inserted in reverse, so order comes from the names.
        for n in names.iter().rev() {
            maps.insert(Bytes::copy_from_slice(n), map());
        }
        assert_eq!(maps.len(), 7);
        let all: Vec<&[u8]> = maps.keys().map(|k| &k[..]).collect();
        assert_eq!(all, names);
        assert_eq!(maps.values().count(), 7);
        assert_eq!(maps.values_mut().count(), 7);
        // Every start bound gives the names at or after it, as a BTreeMap's range does.
        let reference: std::collections::BTreeSet<&[u8]> = names.iter().copied().collect();
        let probes: [&[u8]; 10] = [
            b"",
            b"\0",
            b"a",
            b"b",
            b"defaul",
            b"default",
            b"default\0",
            b"defaulu",
            b"e",
            b"zz",
        ];
        for p in probes {
            for lo in [Bound::Included(p), Bound::Excluded(p)] {
                let got: Vec<&[u8]> = maps.range_from(lo).map(|(k, _)| &k[..]).collect();
                let want: Vec<&[u8]> = reference
                    .range::<[u8], _>((lo, Bound::Unbounded))
                    .copied()
                    .collect();
                assert_eq!(got, want, "from {lo:?}");
            }
        }
        // Without a default map.
        assert!(maps.remove(b"default").is_some());
        assert!(maps.get(b"default").is_none());
        assert!(!maps.contains_key(b"default"));
        let all: Vec<&[u8]> = maps.keys().map(|k| &k[..]).collect();
        assert_eq!(all, [&b""[..], b"a", b"defaul", b"default\0", b"e", b"z"]);
        let from: Vec<&[u8]> = maps
            .range_from(Bound::Included(b"default"))
            .map(|(k, _)| &k[..])
            .collect();
        assert_eq!(from, [&b"default\0"[..], b"e", b"z"]);
        assert!(maps.get(b"defaul").is_some() && maps.get_key_value(b"e").is_some());
        maps.clear();
        assert_eq!(maps.len(), 0);
    }

    #[test]
    fn the_default_map_is_found_by_name() {
        let mut maps = Maps::default();
        assert!(maps.get(DEFAULT_MAP).is_none());
        maps.insert(Bytes::from_static(DEFAULT_MAP), map());
        assert!(maps.get(b"default").is_some());
        assert!(maps.get_mut(b"default").is_some());
        assert_eq!(&maps.get_key_value(b"default").unwrap().0[..], DEFAULT_MAP);
        assert!(maps.get(b"Default").is_none() && maps.get(b"defaults").is_none());
        assert_eq!(maps.len(), 1);
    }
}
