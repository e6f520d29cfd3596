//! [`NodeStream`]: an agent's connection to its node stream. It yields the
//! snapshot and deltas in order, notices a server gone silent (no line, not
//! even a heartbeat, for a while), and reconnects with backoff, to the next
//! server when several are configured, resuming from the last revision it
//! delivered. `Disconnected` and `Connected` events tell the agent when it
//! runs "fail static" on what it last applied.

use std::time::{Duration, SystemTime};

use crate::api::NodeMessage;
use crate::client::Lines;
use crate::{Client, ClientError};

/// Timing of a node stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStreamOptions {
    /// Silence after which the server counts as gone (three heartbeats of
    /// the server's default 5 s).
    pub silence: Duration,
    /// First pause before reconnecting.
    pub min_backoff: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for NodeStreamOptions {
    fn default() -> NodeStreamOptions {
        NodeStreamOptions {
            silence: Duration::from_secs(15),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What [`NodeStream::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Connected (again) to a server; messages follow.
    Connected {
        /// The server's URL.
        server: String,
    },
    /// The connection is lost; keep enforcing what was applied ("fail
    /// static") until `Connected`.
    Disconnected {
        /// Why.
        reason: String,
        /// Since when.
        since: SystemTime,
    },
    /// A snapshot, delta or heartbeat, in order.
    Message(NodeMessage),
}

/// An agent's node stream that never ends: it reconnects by itself.
pub struct NodeStream {
    client: Client,
    node: String,
    options: NodeStreamOptions,
    /// The revision of the last message delivered: where a reconnect resumes.
    revision: Option<u64>,
    lines: Option<Lines>,
    /// Whether the next connection attempt should wait first.
    backoff: Option<Duration>,
    /// Whether the agent was told about the current outage.
    told_down: bool,
}

impl NodeStream {
    /// A stream for `node`, resuming after `from` (the agent's last applied
    /// revision) when given. Nothing is sent until the first [`next`](Self::next).
    pub fn new(
        client: Client,
        node: &str,
        from: Option<u64>,
        options: NodeStreamOptions,
    ) -> NodeStream {
        NodeStream {
            client,
            node: node.to_owned(),
            options,
            revision: from,
            lines: None,
            backoff: None,
            told_down: false,
        }
    }

    /// The revision of the last message delivered.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Whether the stream is connected now.
    pub fn is_connected(&self) -> bool {
        self.lines.is_some()
    }

    /// The next event: a message, or a change of connection.
    pub async fn next(&mut self) -> NodeEvent {
        loop {
            let Some(lines) = &mut self.lines else {
                return self.connect().await;
            };
            let line = match tokio::time::timeout(self.options.silence, lines.next()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => return self.disconnected("the server ended the stream".to_owned()),
                Ok(Err(e)) => return self.disconnected(e.to_string()),
                Err(_) => {
                    return self.disconnected(format!(
                        "no message (not even a heartbeat) for {} s",
                        self.options.silence.as_secs()
                    ))
                }
            };
            match serde_json::from_str::<NodeMessage>(&line) {
                Ok(message) => {
                    self.revision = Some(message.revision());
                    return NodeEvent::Message(message);
                }
                Err(e) => {
                    // A line of a newer server version: skip it rather than
                    // lose the connection over it.
                    tracing::warn!(node = %self.node, error = %e, "ignoring an unreadable node stream line");
                }
            }
        }
    }

    fn disconnected(&mut self, reason: String) -> NodeEvent {
        tracing::warn!(node = %self.node, server = %self.client.server(), %reason, "node stream lost");
        self.lines = None;
        self.client.rotate();
        self.backoff = Some(self.options.min_backoff);
        self.told_down = true;
        NodeEvent::Disconnected {
            reason,
            since: SystemTime::now(),
        }
    }

    /// Connects, waiting between attempts with a growing pause and trying
    /// the configured servers in turn.
    async fn connect(&mut self) -> NodeEvent {
        loop {
            if let Some(pause) = self.backoff {
                tokio::time::sleep(pause).await;
            }
            let server = self.client.server().to_owned();
            match self
                .client
                .open_node_stream(&server, &self.node, self.revision)
                .await
            {
                Ok(lines) => {
                    tracing::info!(node = %self.node, %server, from = ?self.revision, "node stream connected");
                    self.lines = Some(lines);
                    self.backoff = None;
                    self.told_down = false;
                    return NodeEvent::Connected { server };
                }
                Err(e) => {
                    let pause = self
                        .backoff
                        .map_or(self.options.min_backoff, |b| b * 2)
                        .min(self.options.max_backoff);
                    tracing::warn!(node = %self.node, %server, error = %e, retry_in = ?pause, "cannot open the node stream");
                    if matches!(e, ClientError::Connect { .. })
                        || e.status().is_some_and(|s| s >= 500)
                    {
                        self.client.rotate();
                    }
                    self.backoff = Some(pause);
                    if !self.told_down {
                        self.told_down = true;
                        return NodeEvent::Disconnected {
                            reason: e.to_string(),
                            since: SystemTime::now(),
                        };
                    }
                }
            }
        }
    }
}
