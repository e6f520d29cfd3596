//! The Rust ABI mirror against the compiled C: every struct's size and member
//! offsets, and every enum's values, read from the BTF of `bpf/abi_btf.c`'s
//! object; and every map's key and value size in the datapath objects. A
//! field added, moved or resized on one side only fails here.

use std::collections::BTreeMap;

use object::{Object, ObjectSection};
use palisade_datapath::abi::{self, AbiStruct};
use palisade_datapath::testing::{ABI_BTF_OBJECT, DATAPATH_OBJECTS};
use palisade_datapath::DropReason;

/// The structs and enums of a BTF blob, by name.
#[derive(Default)]
struct BtfTypes {
    /// name -> (size, [(member, byte offset)])
    structs: BTreeMap<String, (u32, Vec<(String, u32)>)>,
    /// name -> [(enumerator, value)]
    enums: BTreeMap<String, Vec<(String, i64)>>,
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

fn string_at(strings: &[u8], offset: u32) -> String {
    let rest = &strings[offset as usize..];
    let end = rest.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(rest[..end].to_vec()).unwrap()
}

/// Parses the type section of a (little-endian) BTF blob: just enough to
/// walk every kind and keep structs and enums (kernel doc: "BPF Type Format").
fn parse_btf(btf: &[u8]) -> BtfTypes {
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let (str_off, str_len) = (u32_at(btf, 16) as usize, u32_at(btf, 20) as usize);
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..hdr_len + str_off + str_len];

    let mut out = BtfTypes::default();
    let mut at = 0;
    while at < types.len() {
        let name = string_at(strings, u32_at(types, at));
        let info = u32_at(types, at + 4);
        let size = u32_at(types, at + 8);
        let (vlen, kind, kind_flag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31);
        at += 12;
        match kind {
            1 | 14 | 17 => at += 4, // INT, VAR, DECL_TAG
            3 => at += 12,          // ARRAY
            4 | 5 => {
                // STRUCT, UNION
                let mut members = Vec::new();
                for i in 0..vlen {
                    let m = at + i * 12;
                    let offset = u32_at(types, m + 8);
                    let bits = if kind_flag == 1 {
                        offset & 0xff_ffff
                    } else {
                        offset
                    };
                    assert_eq!(bits % 8, 0, "{name}: bitfields are not part of the ABI");
                    members.push((string_at(strings, u32_at(types, m)), bits / 8));
                }
                if kind == 4 && !name.is_empty() {
                    out.structs.insert(name, (size, members));
                }
                at += vlen * 12;
            }
            6 => {
                // ENUM
                let values = (0..vlen)
                    .map(|i| {
                        let e = at + i * 8;
                        (
                            string_at(strings, u32_at(types, e)),
                            i64::from(u32_at(types, e + 4) as i32),
                        )
                    })
                    .collect();
                if !name.is_empty() {
                    out.enums.insert(name, values);
                }
                at += vlen * 8;
            }
            13 => at += vlen * 8,       // FUNC_PROTO
            15 | 19 => at += vlen * 12, // DATASEC, ENUM64
            2 | 7..=12 | 16 | 18 => {} // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            other => panic!("unknown BTF kind {other}"),
        }
    }
    out
}

fn btf_of(object: &[u8]) -> BtfTypes {
    let file = object::File::parse(object).expect("an ELF object");
    let section = file
        .section_by_name(".BTF")
        .expect("a .BTF section (compiled with -g)");
    parse_btf(section.data().unwrap())
}

#[test]
fn every_rust_struct_has_the_c_layout() {
    let btf = btf_of(ABI_BTF_OBJECT);
    for (name, size, fields) in abi::STRUCTS {
        let (c_size, c_members) = btf
            .structs
            .get(*name)
            .unwrap_or_else(|| panic!("struct {name} not in abi.h"));
        assert_eq!(*c_size as usize, *size, "size of struct {name}");
        let rust: Vec<(String, u32)> = fields
            .iter()
            .map(|(f, off)| (f.trim_start_matches("r#").to_string(), *off as u32))
            .collect();
        assert_eq!(
            &rust, c_members,
            "members of struct {name} (Rust left, C right)"
        );
    }
    // Nothing in abi.h is left without a mirror.
    let mirrored: Vec<&str> = abi::STRUCTS.iter().map(|s| s.0).collect();
    for name in btf
        .structs
        .keys()
        .filter(|n| !n.starts_with("bpf_") && !n.starts_with("__"))
    {
        assert!(
            mirrored.contains(&name.as_str()),
            "struct {name} of abi.h has no Rust mirror in abi.rs"
        );
    }
}

#[test]
fn every_rust_enum_has_the_c_values() {
    let btf = btf_of(ABI_BTF_OBJECT);
    for (name, values) in abi::ENUMS.iter().chain([&DropReason::C_ENUM]) {
        let c = btf
            .enums
            .get(*name)
            .unwrap_or_else(|| panic!("enum {name} not in the object's BTF"));
        let mut c: Vec<(String, i64)> = c.clone();
        let mut rust: Vec<(String, i64)> = values
            .iter()
            .map(|(n, v)| (n.to_string(), i64::from(*v)))
            .collect();
        c.sort();
        rust.sort();
        assert_eq!(rust, c, "enum {name} (Rust left, C right)");
    }
}

#[test]
fn every_map_uses_the_abi_sizes() {
    fn size<T: AbiStruct>() -> u32 {
        std::mem::size_of::<T>() as u32
    }
    let expected: BTreeMap<&str, (u32, u32)> = [
        ("ENDPOINTS", (4, size::<abi::Endpoint>())),
        ("ENDPOINT_INDEX", (4, size::<abi::EndpointSlot>())),
        (
            "IPCACHE",
            (size::<abi::IpcacheKey>(), size::<abi::IpcacheValue>()),
        ),
        (
            "POLICY",
            (size::<abi::PolicyKey>(), size::<abi::PolicyValue>()),
        ),
        (
            "POLICY_RANGES",
            (size::<abi::PolicyKey>(), size::<abi::PolicyValue>()),
        ),
        ("ROUTE_GEN", (4, 4)),
        ("CT", (size::<abi::CtKey>(), size::<abi::CtEntry>())),
        ("TENANTS", (4, size::<abi::TenantInfo>())),
        ("UPLINKS", (4, size::<abi::UplinkInfo>())),
        ("VNIS", (4, size::<abi::VniInfo>())),
        ("CONFIG", (4, size::<abi::Config>())),
        ("CLOCK", (4, size::<abi::Clock>())),
        ("DROP_COUNTERS", (4, size::<abi::Counter>())),
        ("RULE_COUNTERS", (4, size::<abi::Counter>())),
        ("STATS", (4, 8)),
        (
            "RATELIMIT",
            (size::<abi::RatelimitKey>(), size::<abi::RatelimitValue>()),
        ),
        ("META", (4, size::<abi::VerdictMeta>())),
        ("CHAIN", (4, 4)),
        ("EVENTS", (0, 0)),
    ]
    .into_iter()
    .collect();
    for (object, bytes) in DATAPATH_OBJECTS {
        let parsed = aya_obj::Object::parse(bytes).unwrap_or_else(|e| panic!("{object}: {e}"));
        let names: Vec<&str> = parsed.maps.keys().map(String::as_str).collect();
        assert_eq!(
            names.len(),
            expected.len(),
            "{object} declares exactly the datapath's maps: {names:?}"
        );
        for (name, map) in &parsed.maps {
            let want = expected
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{object}: unexpected map {name}"));
            assert_eq!(
                (map.key_size(), map.value_size()),
                *want,
                "{object}: key and value size of {name}"
            );
        }
    }
}
