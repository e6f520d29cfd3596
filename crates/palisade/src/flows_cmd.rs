//! `palisade flows`: the flows the control plane received from the agents,
//! one line per flow for a person (or the records as JSON lines), once or
//! followed as they arrive.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use palisade_client::visibility::{FlowAction, FlowQuery, FlowRecord, FlowVerdict};

use crate::cli::Output;
use crate::Outcome;

/// `--verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictArg {
    /// Allowed connections (and their ends).
    Allow,
    /// Denied packets and cut connections.
    Deny,
    /// What an audit-mode policy would deny.
    Audit,
}

/// `palisade flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Keep printing new flows as they arrive (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    /// Only this tenant's flows (tenant tokens always see only their own).
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only flows from or to this endpoint: tenant:name, or a name in any tenant.
    #[arg(long, value_name = "REF")]
    pub endpoint: Option<String>,
    /// Only flows with this verdict.
    #[arg(long, value_enum)]
    pub verdict: Option<VerdictArg>,
    /// Only flows of the last DURATION (15m, 1h) or since a time (2024-05-01T10:00:00Z).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// At most this many of the newest flows (not with --follow).
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    pub limit: Option<usize>,
    /// Output format: text (one line per flow) or json (one record per line).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub connection: crate::remote::Connection,
}

/// `12:01:07`: the UTC time of day of an RFC 3339 timestamp.
fn time_of_day(timestamp: &str) -> String {
    match humantime::parse_rfc3339_weak(timestamp) {
        Ok(at) => humantime::format_rfc3339_seconds(at).to_string()[11..19].to_owned(),
        Err(_) => timestamp.to_owned(),
    }
}

/// One flow for a person, e.g.
/// `12:01:07 DENY acme:web-1 → acme:db-1 tcp/5432 default deny of tenant acme`.
pub fn line(record: &FlowRecord) -> String {
    let flow = format!(
        "{} → {} {}",
        record.source_name(),
        record.destination_name(),
        record.service()
    );
    let time = time_of_day(&record.timestamp);
    let decided = record.decided_by().unwrap_or("no rule named");
    let suppressed = match record.palisade.suppressed {
        Some(n) if n > 0 => format!(" (+{n} suppressed)"),
        _ => String::new(),
    };
    match record.event.action {
        FlowAction::ConnectionAllowed => format!("{time} ALLOW {flow} {decided}"),
        FlowAction::PacketDenied => format!("{time} DENY {flow} {decided}{suppressed}"),
        FlowAction::ConnectionCut => format!("{time} CUT {flow} {decided}"),
        FlowAction::AuditWouldDeny => {
            let rule = record
                .palisade
                .audit
                .as_ref()
                .map_or("an audit rule", |a| a.rule.as_str());
            format!("{time} AUDIT would deny {flow} by {rule}{suppressed}")
        }
        FlowAction::ConnectionClosed => format!(
            "{time} CLOSED {flow} {} packets, {} bytes",
            record.palisade.packets.unwrap_or(0),
            record.palisade.bytes.unwrap_or(0)
        ),
    }
}

fn print(record: &FlowRecord, output: Output) -> Result<()> {
    match output {
        Output::Text => println!("{}", line(record)),
        Output::Json => println!("{}", serde_json::to_string(record)?),
    }
    Ok(())
}

/// Runs `palisade flows`.
pub fn run(args: FlowsArgs) -> Result<Outcome> {
    let client = args.connection.client()?;
    let query = FlowQuery {
        tenant: args.tenant,
        endpoint: args.endpoint,
        verdict: args.verdict.map(|v| match v {
            VerdictArg::Allow => FlowVerdict::Allow,
            VerdictArg::Deny => FlowVerdict::Deny,
            VerdictArg::Audit => FlowVerdict::Audit,
        }),
        since: args.since,
        limit: args.limit,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if !args.follow {
            let records = client.flows(&query).await?;
            if records.is_empty() && args.output == Output::Text {
                eprintln!(
                    "no flows match (a server holds the flows of the agents connected to it)"
                );
            }
            for record in &records {
                print(record, args.output)?;
            }
            return Ok(Outcome::Yes);
        }
        let mut stream = client.follow_flows(&query).await?;
        while let Some(record) = stream.next().await {
            print(&record?, args.output)?;
        }
        eprintln!("the server ended the stream");
        Ok(Outcome::Yes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> FlowRecord {
        serde_json::from_value(serde_json::json!({
            "@timestamp": "2025-01-10T12:01:07.250Z",
            "event": {"action": action},
            "source": {"ip": "198.51.100.1", "port": 40000},
            "destination": {"ip": "10.0.3.10", "port": 5432},
            "network": {"transport": "tcp"},
            "rule": {"name": "default deny of tenant acme"},
            "palisade": {"tenant": "acme", "destination": {"endpoint": "db-1"},
                         "audit": {"rule": "default/lockdown ingress rule 0"}, "suppressed": 2,
                         "packets": 10, "bytes": 1200}
        }))
        .unwrap()
    }

    #[test]
    fn lines_read_like_the_issue_says() {
        assert_eq!(
            line(&record("packet-denied")),
            "12:01:07 DENY acme:198.51.100.1 → acme:db-1 tcp/5432 default deny of tenant acme (+2 suppressed)"
        );
        assert_eq!(
            line(&record("audit-would-deny")),
            "12:01:07 AUDIT would deny acme:198.51.100.1 → acme:db-1 tcp/5432 by default/lockdown ingress rule 0 (+2 suppressed)"
        );
        assert_eq!(
            line(&record("connection-closed")),
            "12:01:07 CLOSED acme:198.51.100.1 → acme:db-1 tcp/5432 10 packets, 1200 bytes"
        );
    }
}
