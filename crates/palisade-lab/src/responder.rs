//! Responders: small servers inside endpoint and world namespaces that answer
//! every TCP connection and UDP datagram with their name, so that a probe
//! learns not only that a packet got through but whom it reached.
//!
//! The server side is [`run`] (and [`serve_main`], its command-line form); it
//! runs in its own process, started by the lab with `LabOptions::responder_command`
//! plus the arguments of [`ServeArgs::to_args`]. Once every socket is bound it
//! prints [`READY_LINE`] on standard output; the lab waits for that line, so
//! `up` returns only when every responder listens.

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use palisade_model::{Protocol, ServePort};

use crate::error::{LabError, Result};
use crate::netns;
use crate::process;
use crate::state::ResponderInfo;

/// What a responder prints on standard output once it listens on every port.
pub const READY_LINE: &str = "ready";

/// Ports every world serves.
pub const WORLD_PORTS: [ServePort; 3] = [
    ServePort {
        protocol: Protocol::Tcp,
        port: 80,
    },
    ServePort {
        protocol: Protocol::Tcp,
        port: 443,
    },
    ServePort {
        protocol: Protocol::Udp,
        port: 53,
    },
];

/// How long a TCP peer may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest line read from a TCP peer.
const MAX_LINE: u64 = 1024;

/// How long `up` waits for a responder to report ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A responder's command line: where it runs, what it answers, what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// Network namespace to serve in (a name under `/run/netns`).
    pub netns: String,
    /// The name it answers with, e.g. `acme:web-1`.
    pub name: String,
    /// Ports to serve (TCP and UDP).
    pub ports: Vec<ServePort>,
}

impl ServeArgs {
    /// The arguments the lab appends to `responder_command`:
    /// `--netns NS --name NAME [--serve tcp/80]...`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--netns".to_string(),
            self.netns.clone(),
            "--name".to_string(),
            self.name.clone(),
        ];
        for port in &self.ports {
            args.push("--serve".to_string());
            args.push(port.to_string());
        }
        args
    }

    /// Parses what [`ServeArgs::to_args`] produced.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<ServeArgs> {
        let mut netns = None;
        let mut name = None;
        let mut ports = Vec::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| LabError::ResponderArgs(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--netns" => netns = Some(value()?),
                "--name" => name = Some(value()?),
                "--serve" => ports.push(parse_serve_port(&value()?)?),
                other => {
                    return Err(LabError::ResponderArgs(format!(
                        "unknown argument {other:?}"
                    )))
                }
            }
        }
        Ok(ServeArgs {
            netns: netns.ok_or_else(|| LabError::ResponderArgs("--netns is missing".into()))?,
            name: name.ok_or_else(|| LabError::ResponderArgs("--name is missing".into()))?,
            ports,
        })
    }
}

/// Parses `tcp/80` or `udp/53` (the form `ServePort` displays).
pub fn parse_serve_port(text: &str) -> Result<ServePort> {
    let bad = || LabError::ResponderArgs(format!("{text:?} is not tcp/PORT or udp/PORT"));
    let (proto, port) = text.split_once('/').ok_or_else(bad)?;
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad()),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(ServePort { protocol, port })
}

/// Parses the responder's arguments (those after the subcommand) and runs it:
/// what the CLI's hidden `lab serve` calls. Returns only on error.
pub fn serve_main<I: IntoIterator<Item = String>>(args: I) -> Result<Infallible> {
    let args = ServeArgs::parse(args)?;
    run(&args.netns, &args.ports, &args.name)
}

/// Enters namespace `netns`, binds every port, prints [`READY_LINE`] and
/// answers forever: a TCP peer gets `<name>\n` after sending a line (or
/// closing), each UDP datagram gets `<name>\n` back from the address it was
/// sent to. Returns only on error.
///
/// Call it before the process starts other threads: it moves the calling
/// thread into `netns`, and the threads it starts inherit that.
pub fn run(netns: &str, ports: &[ServePort], name: &str) -> Result<Infallible> {
    if ports.is_empty() {
        return Err(LabError::ResponderArgs(format!(
            "responder {name} has no --serve port"
        )));
    }
    let file = netns::open(netns)?;
    netns::enter(netns, &file)?;
    drop(file);

    let bind_error = |port: &ServePort, source| LabError::Bind {
        netns: netns.to_string(),
        name: name.to_string(),
        port: port.to_string(),
        source,
    };
    let reply = format!("{name}\n");
    let mut workers = Vec::new();
    let mut sockets = Vec::new();
    for port in ports {
        match port.protocol {
            Protocol::Tcp => {
                let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port.port))
                    .map_err(|e| bind_error(port, e))?;
                sockets.push(Socket::Tcp(listener));
            }
            Protocol::Udp => {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port.port))
                    .map_err(|e| bind_error(port, e))?;
                // Learn each datagram's destination, to answer from that address.
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
                    .map_err(|e| bind_error(port, e.into()))?;
                sockets.push(Socket::Udp(socket));
            }
            _ => return Err(bind_error(port, io::ErrorKind::Unsupported.into())),
        }
    }
    for socket in sockets {
        let reply = reply.clone();
        workers.push(thread::spawn(move || match socket {
            Socket::Tcp(listener) => serve_tcp(listener, reply),
            Socket::Udp(socket) => serve_udp(socket, reply),
        }));
    }
    tracing::info!(netns, name, ports = ?ports, "responder listening");
    let mut stdout = io::stdout().lock();
    // If nobody listens for the ready line any more, serve all the same.
    let _ = writeln!(stdout, "{READY_LINE}").and_then(|()| stdout.flush());
    drop(stdout);

    for worker in workers {
        let _ = worker.join();
    }
    // The workers loop forever; reaching this means every one of them died.
    Err(LabError::Responder {
        netns: netns.to_string(),
        detail: "every serving thread stopped".into(),
    })
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

fn serve_tcp(listener: TcpListener, reply: String) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let reply = reply.clone();
                if let Err(e) = thread::Builder::new().spawn(move || answer_tcp(stream, &reply)) {
                    tracing::warn!(error = %e, "no thread for a connection; dropping it");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn answer_tcp(stream: TcpStream, reply: &str) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut line = Vec::new();
    // A peer that sends nothing or something odd still gets the name.
    let _ = BufReader::new((&stream).take(MAX_LINE)).read_until(b'\n', &mut line);
    let mut stream = stream;
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

fn serve_udp(socket: UdpSocket, reply: String) {
    let fd = socket.as_raw_fd();
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (peer, local) =
            match recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
                Ok(msg) => {
                    let local = msg.cmsgs().ok().and_then(|mut cmsgs| {
                        cmsgs.find_map(|c| match c {
                            ControlMessageOwned::Ipv4PacketInfo(info) => Some(info.ipi_addr),
                            _ => None,
                        })
                    });
                    (msg.address, local)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "udp receive failed");
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
        let Some(peer) = peer else { continue };
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: local.unwrap_or(libc::in_addr { s_addr: 0 }),
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
        let iov = [IoSlice::new(reply.as_bytes())];
        if let Err(e) = sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&peer)) {
            tracing::debug!(error = %e, %peer, "udp reply failed");
        }
    }
}

/// A responder process that has been started and not yet reported ready.
pub(crate) struct Starting {
    netns: String,
    name: String,
    child: Child,
    stdout: ChildStdout,
    log: std::path::PathBuf,
}

impl Starting {
    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// Starts `command` + `args` as a detached process (its own process group, so
/// a Ctrl-C at the terminal that ran `up` does not stop it), its standard
/// error appended to `log`.
pub(crate) fn spawn(command: &[OsString], args: &ServeArgs, log: &Path) -> Result<Starting> {
    let (program, leading) = command.split_first().ok_or(LabError::NoResponderCommand)?;
    let io_error = |action, source| LabError::Io {
        action,
        path: log.to_path_buf(),
        source,
    };
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_error("create responder log", e))?;
    let mut child = Command::new(program)
        .args(leading)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::Responder {
            netns: args.netns.clone(),
            detail: format!("could not start {}: {e}", program.to_string_lossy()),
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(Starting {
        netns: args.netns.clone(),
        name: args.name.clone(),
        child,
        stdout,
        log: log.to_path_buf(),
    })
}

/// Waits until the responder prints [`READY_LINE`] (or `deadline` passes, or
/// it exits) and returns what the state records about it.
pub(crate) fn wait_ready(mut starting: Starting, deadline: Instant) -> Result<ResponderInfo> {
    let pid = starting.child.id() as i32;
    // Read before the process can exit and be reaped, so the pair names it.
    let start_time = process::start_time(pid);
    let failed = |detail: String| LabError::Responder {
        netns: starting.netns.clone(),
        detail,
    };
    // Other lines (a log line printed by mistake) are skipped, not fatal.
    let mut seen = Vec::new();
    while !seen
        .split(|b| *b == b'\n')
        .any(|line| line.trim_ascii() == READY_LINE.as_bytes())
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(starting.stdout.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(failed(format!("poll: {e}"))),
        };
        if ready == 0 {
            return Err(failed(format!(
                "not ready after {}s (see {})",
                READY_TIMEOUT.as_secs(),
                starting.log.display()
            )));
        }
        let mut buf = [0u8; 256];
        let n = match starting.stdout.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(format!("reading its output: {e}"))),
        };
        if n == 0 {
            let status = starting
                .child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_default();
            return Err(failed(format!(
                "exited ({status}) before it was ready: {}",
                log_tail(&starting.log)
            )));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(ResponderInfo {
        netns: starting.netns,
        name: starting.name,
        pid,
        start_time: start_time.unwrap_or_default(),
    })
}

/// The last lines of a responder's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        format!("no output in {}", log.display())
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let args = ServeArgs {
            netns: "pl_x_e_acme_-_web".into(),
            name: "acme:web".into(),
            ports: vec![WORLD_PORTS[0], WORLD_PORTS[2]],
        };
        assert_eq!(
            args.to_args(),
            [
                "--netns",
                "pl_x_e_acme_-_web",
                "--name",
                "acme:web",
                "--serve",
                "tcp/80",
                "--serve",
                "udp/53"
            ]
        );
        assert_eq!(ServeArgs::parse(args.to_args()).unwrap(), args);
    }

    #[test]
    fn a_responder_with_nothing_to_serve_refuses_to_start() {
        let err = run("pl_nosuchlab_e_x", &[], "acme:web").unwrap_err();
        assert!(err.to_string().contains("no --serve port"), "{err}");
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let parse = |v: &[&str]| ServeArgs::parse(v.iter().map(|s| s.to_string()));
        assert!(parse(&["--name", "x"])
            .unwrap_err()
            .to_string()
            .contains("--netns is missing"));
        assert!(parse(&["--netns"])
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(parse(&["--netns", "n", "--name", "x", "--serve", "sctp/1"]).is_err());
        assert!(parse(&["--netns", "n", "--name", "x", "--serve", "tcp/0"]).is_err());
        assert!(parse(&["--bogus"])
            .unwrap_err()
            .to_string()
            .contains("--bogus"));
    }
}
