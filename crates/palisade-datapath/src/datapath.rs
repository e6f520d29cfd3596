//! [`Datapath`]: loads the embedded BPF objects, creates or adopts the pinned
//! maps under the agent's bpffs directory, and hands out the typed map
//! handles, the programs, the event reader and the chain slots.
//!
//! Every map is pinned by name in [`DatapathConfig::bpffs_dir`]. When pins
//! exist (a restarted or upgraded agent) they are adopted with their
//! contents, after checking that each pinned map has exactly the type, key
//! size, value size and flags this build declares: a layout change is refused
//! with [`Error::PinnedMapMismatch`] rather than corrupting tables.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, MapInfo, ProgramArray};
use aya::programs::{ProgramFd, SchedClassifier};
use aya::{Ebpf, EbpfLoader};

use crate::abi::{ChainSlot, Clock, Hook};
use crate::error::{Error, MapShape, Result};
use crate::events::EventReader;
use crate::maps::Maps;

/// The objects compiled from `bpf/*.c` by build.rs, in load order: the first
/// one creates the maps, the others adopt them through the pins.
pub(crate) const OBJECTS: [(&str, &[u8]); 5] = [
    (
        "from_endpoint",
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/from_endpoint.o")),
    ),
    (
        "to_endpoint",
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/to_endpoint.o")),
    ),
    (
        "from_uplink",
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/from_uplink.o")),
    ),
    (
        "deliver",
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/deliver.o")),
    ),
    (
        "from_overlay",
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/from_overlay.o")),
    ),
];

/// Program name of each hook in its object.
fn program_name(hook: Hook) -> &'static str {
    match hook {
        Hook::FromEndpoint => "from_endpoint",
        Hook::ToEndpoint => "to_endpoint",
        Hook::FromUplink => "from_uplink",
        Hook::Deliver => "deliver_prog",
        Hook::FromOverlay => "from_overlay",
    }
}

fn object_index(hook: Hook) -> usize {
    match hook {
        Hook::FromEndpoint => 0,
        Hook::ToEndpoint => 1,
        Hook::FromUplink => 2,
        Hook::Deliver => 3,
        Hook::FromOverlay => 4,
    }
}

/// Where bpffs is mounted when nobody did it yet.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Maximum entries of each resizable map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// ENDPOINTS: endpoint ports on the node.
    pub endpoints: u32,
    /// IPCACHE: (tenant, prefix) entries.
    pub ipcache: u32,
    /// POLICY and POLICY_RANGES (each): compiled policy entries of all
    /// identities on the node.
    pub policy: u32,
    /// CT: tracked connections (LRU: the least recently used is evicted).
    pub conntrack: u32,
    /// TENANTS, VNIS and UPLINKS: tenants with a presence on the node.
    pub tenants: u32,
    /// RULE_COUNTERS: rule cookies with counters.
    pub rule_counters: u32,
    /// RATELIMIT: flows with rate-limited events in flight (LRU).
    pub ratelimit: u32,
    /// EVENTS ring buffer size in bytes (a power of two, multiple of the page size).
    pub events_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            endpoints: 4096,
            ipcache: 65536,
            policy: 262_144,
            conntrack: 262_144,
            tenants: 1024,
            rule_counters: 65536,
            ratelimit: 16384,
            events_bytes: 4 << 20,
        }
    }
}

impl MapSizes {
    fn by_map(&self) -> [(&'static str, u32); 11] {
        [
            ("ENDPOINTS", self.endpoints),
            ("IPCACHE", self.ipcache),
            ("POLICY", self.policy),
            ("POLICY_RANGES", self.policy),
            ("CT", self.conntrack),
            ("TENANTS", self.tenants),
            ("UPLINKS", self.tenants),
            ("VNIS", self.tenants),
            ("RULE_COUNTERS", self.rule_counters),
            ("RATELIMIT", self.ratelimit),
            ("EVENTS", self.events_bytes),
        ]
    }
}

/// How to open the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Directory on bpffs holding this agent's pins (maps and links), e.g.
    /// `/sys/fs/bpf/palisade/<node>`. Created if missing.
    pub bpffs_dir: PathBuf,
    /// Sizes used when the maps are created (adopted maps keep theirs).
    pub map_sizes: MapSizes,
}

impl DatapathConfig {
    /// Default sizes, pins under `bpffs_dir`.
    pub fn new(bpffs_dir: impl Into<PathBuf>) -> Self {
        Self {
            bpffs_dir: bpffs_dir.into(),
            map_sizes: MapSizes::default(),
        }
    }
}

/// The loaded datapath: programs, pinned maps and their typed handles.
pub struct Datapath {
    dir: PathBuf,
    objects: Vec<Ebpf>,
    maps: Maps,
    chain: ProgramArray<MapData>,
    events: Option<EventReader>,
    adopted: bool,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("dir", &self.dir)
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the programs and creates, or adopts, the maps pinned under
    /// `cfg.bpffs_dir` (mounting bpffs at /sys/fs/bpf first if needed).
    /// Fresh maps get [`crate::abi::Config::DEFAULT`] in CONFIG. The delivery
    /// program is (re)installed in the CHAIN; a stage in the post-verdict
    /// slot is kept.
    pub fn open(cfg: &DatapathConfig) -> Result<Self> {
        ensure_bpffs(&cfg.bpffs_dir)?;
        let adopted = check_pinned_maps(&cfg.bpffs_dir, &cfg.map_sizes)?;

        let mut objects = Vec::with_capacity(OBJECTS.len());
        for (name, bytes) in OBJECTS {
            let mut loader = EbpfLoader::new();
            loader.default_map_pin_directory(&cfg.bpffs_dir);
            for (map, size) in cfg.map_sizes.by_map() {
                loader.map_max_entries(map, size);
            }
            let mut ebpf = loader.load(bytes).map_err(|source| Error::LoadObject {
                object: name,
                source: Box::new(source),
            })?;
            for (prog_name, program) in ebpf.programs_mut() {
                let program: &mut SchedClassifier =
                    program.try_into().map_err(|source| Error::LoadProgram {
                        program: name,
                        source: Box::new(source),
                    })?;
                program.load().map_err(|source| Error::LoadProgram {
                    program: name,
                    source: Box::new(source),
                })?;
                tracing::debug!(object = name, program = prog_name, "loaded");
            }
            objects.push(ebpf);
        }

        let first = &mut objects[0];
        let mut take = |name: &'static str| -> Result<Map> {
            first.take_map(name).ok_or(Error::Missing {
                object: OBJECTS[0].0,
                what: "map",
                name,
            })
        };
        let maps = Maps::new(&mut take)?;
        let chain =
            ProgramArray::try_from(take("CHAIN")?).map_err(|e| Error::map("CHAIN", "open", e))?;
        let mut clock: Array<MapData, Clock> =
            Array::try_from(take("CLOCK")?).map_err(|e| Error::map("CLOCK", "open", e))?;
        // Before anything is attached by this loader; a previous one's
        // programs read the same map, and the values barely move.
        clock
            .set(0, crate::clock::calibrate()?, 0)
            .map_err(|e| Error::map("CLOCK", "write", e))?;
        let events = EventReader::new(take("EVENTS")?)?;

        let mut dp = Self {
            dir: cfg.bpffs_dir.clone(),
            objects,
            maps,
            chain,
            events: Some(events),
            adopted,
        };
        if dp.maps.config.get()? == crate::abi::Config::default() {
            dp.maps.config.set(&crate::abi::Config::DEFAULT)?;
        }
        let deliver = dp
            .program(Hook::Deliver)?
            .fd()
            .map_err(|source| Error::LoadProgram {
                program: "deliver_prog",
                source: Box::new(source),
            })?;
        let deliver = deliver.try_clone().map_err(|source| Error::Io {
            action: "duplicate the fd of",
            path: PathBuf::from("deliver_prog"),
            source,
        })?;
        dp.set_chain(ChainSlot::Deliver, &deliver)?;
        tracing::info!(dir = %dp.dir.display(), adopted, "datapath loaded");
        Ok(dp)
    }

    /// The bpffs directory of this datapath's pins.
    pub fn bpffs_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether existing pinned maps were adopted (their contents kept).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The typed map handles.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The typed map handles, for updates.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Bumps CONFIG.policy_revision and returns the new revision: every
    /// connection is re-decided on its next packet (and cut if now denied).
    pub fn bump_policy_revision(&mut self) -> Result<u32> {
        let mut config = self.maps.config.get()?;
        config.policy_revision = config.policy_revision.wrapping_add(1);
        self.maps.config.set(&config)?;
        Ok(config.policy_revision)
    }

    /// Deletes the connections idle past their CONFIG timeout at `now`
    /// (CLOCK_MONOTONIC, [`crate::monotonic_now`]) and returns them with
    /// their counters; see [`crate::Conntrack::gc`].
    pub fn ct_gc(&mut self, now: std::time::Duration) -> Result<Vec<crate::ClosedFlow>> {
        let config = self.maps.config.get()?;
        self.maps.conntrack.gc(now, &config)
    }

    /// The loaded program of `hook` (for BPF_PROG_TEST_RUN and benchmarks).
    pub fn program(&self, hook: Hook) -> Result<&SchedClassifier> {
        let object = OBJECTS[object_index(hook)].0;
        let name = program_name(hook);
        let missing = || Error::Missing {
            object,
            what: "program",
            name,
        };
        let program = self.objects[object_index(hook)]
            .program(name)
            .ok_or_else(missing)?;
        program.try_into().map_err(|_| missing())
    }

    /// Installs `stage` in the post-verdict chain slot: it runs after every
    /// allow verdict and must finish by tail-calling [`ChainSlot::Deliver`]
    /// (bpf/README.md, "Chain"). Takes effect for the next packet.
    pub fn set_chain_stage(&mut self, stage: &ProgramFd) -> Result<()> {
        self.set_chain(ChainSlot::PostVerdict, stage)
    }

    /// Empties the post-verdict slot: packets go straight to delivery again.
    pub fn clear_chain_stage(&mut self) -> Result<()> {
        match self.chain.clear_index(&(ChainSlot::PostVerdict as u32)) {
            Ok(()) => Ok(()),
            // Already empty.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(Error::map("CHAIN", "clear", e)),
        }
    }

    fn set_chain(&mut self, slot: ChainSlot, program: &ProgramFd) -> Result<()> {
        self.chain
            .set(slot as u32, program, 0)
            .map_err(|e| Error::map("CHAIN", "set", e))
    }

    /// The reader of the EVENTS ring buffer (one consumer: the first call
    /// takes it, later calls fail with [`Error::EventsTaken`]).
    pub fn take_event_reader(&mut self) -> Result<EventReader> {
        self.events.take().ok_or(Error::EventsTaken)
    }
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there, then creates
/// `dir` (0700) and checks it is on bpffs.
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && !is_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| Error::MountBpffs { source: e.into() })?;
        tracing::info!("mounted bpffs at {BPFFS_ROOT}");
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
    if !is_bpffs(dir) {
        return Err(Error::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Compares every pinned map under `dir` with the declaration in this build's
/// object; returns whether any pin existed. A pinned map keeps its size.
fn check_pinned_maps(dir: &Path, sizes: &MapSizes) -> Result<bool> {
    let (object, bytes) = OBJECTS[0];
    let parsed = aya_obj::Object::parse(bytes).map_err(|source| Error::ParseObject {
        object,
        source: Box::new(aya::EbpfError::ParseError(source)),
    })?;
    let mut adopted = false;
    for (name, def) in &parsed.maps {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        adopted = true;
        let info = MapInfo::from_pin(&path).map_err(|e| Error::InspectPin {
            name: name.clone(),
            path: path.clone(),
            source: Box::new(e),
        })?;
        let ringbuf =
            def.map_type() == aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32;
        let expected = MapShape {
            map_type: def.map_type(),
            key_size: if ringbuf { 0 } else { def.key_size() },
            value_size: if ringbuf { 0 } else { def.value_size() },
            flags: def.map_flags(),
        };
        let found = MapShape {
            map_type: info_map_type(&info),
            key_size: info.key_size(),
            value_size: info.value_size(),
            flags: info.map_flags(),
        };
        if expected != found {
            return Err(Error::PinnedMapMismatch {
                name: name.clone(),
                path,
                expected,
                found,
            });
        }
        let configured = sizes
            .by_map()
            .into_iter()
            .find(|(map, _)| map == name)
            .map(|(_, size)| size);
        match configured {
            Some(size) if size != info.max_entries() && !ringbuf => tracing::warn!(
                map = %name,
                pinned = info.max_entries(),
                configured = size,
                "adopted map keeps its size; remove its pin to resize it (drops its contents)"
            ),
            _ => {
                tracing::debug!(map = %name, max_entries = info.max_entries(), "adopting pinned map")
            }
        }
    }
    Ok(adopted)
}

fn info_map_type(info: &MapInfo) -> u32 {
    // MapInfo only exposes the parsed enum; map it back to the raw number.
    info.map_type().map(|t| t as u32).unwrap_or(u32::MAX)
}
