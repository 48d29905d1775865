//! The nodes a client knows of an installation, and the order it tries them in when its
//! connection is lost.
//!
//! A client starts with the configured server (and any `ClientConfig::with_nodes`
//! addresses). After each `Welcome` it asks the node for the installation's live nodes
//! (`Request::Nodes`) and keeps the answer, so that when its node goes away it can go to
//! another one. A round of attempts takes the current node first (it may only have
//! blinked), then the listed ones, then the configured server and the configured extra
//! nodes as a last resort (a load balancer's address, or a node that left the list
//! since). Pure bookkeeping, no IO.

use std::net::{IpAddr, SocketAddr};

use syncline_proto::NodeInfo;

/// A place to connect to: a QUIC address and the name its certificate is checked
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` (an IP, or a name resolved at each attempt).
    pub(crate) addr: String,
    /// The TLS server name: the host, or the configured name for the configured server.
    /// A node's certificate may also be valid for the configured name instead (nodes of
    /// one installation sharing one certificate), see `config::InstallationVerifier`.
    pub(crate) name: String,
}

impl Target {
    /// The target for an advertised `host:port`, its host as the server name; `None`
    /// for an address no other machine can dial (no port, or an unspecified IP such as
    /// `0.0.0.0`, which a node bound to every interface advertises).
    pub(crate) fn advertised(addr: &str) -> Option<Target> {
        if let Ok(sa) = addr.parse::<SocketAddr>() {
            if sa.ip().is_unspecified() || sa.port() == 0 {
                return None;
            }
            return Some(Target {
                addr: sa.to_string(),
                name: sa.ip().to_string(),
            });
        }
        let (host, port) = addr.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
            return None;
        }
        if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            return None;
        }
        Some(Target {
            addr: addr.to_owned(),
            name: host.to_owned(),
        })
    }
}

/// What the client knows of its installation's nodes.
#[derive(Debug, Clone)]
pub(crate) struct NodeBook {
    /// The configured server, then the configured extra nodes.
    configured: Vec<Target>,
    /// The last answer to `Nodes`, the answering node first, paired with where to dial
    /// each (the answering node: where the client reached it).
    listed: Vec<(NodeInfo, Target)>,
    /// The node of the live (or the last) connection.
    current: Option<Target>,
}

impl NodeBook {
    /// A book of the configured server and extra nodes (duplicates dropped).
    pub(crate) fn new(configured: Target, extra: &[Target]) -> NodeBook {
        let mut all = vec![configured];
        for t in extra {
            if !all.iter().any(|k| k.addr == t.addr) {
                all.push(t.clone());
            }
        }
        NodeBook {
            configured: all,
            listed: Vec::new(),
            current: None,
        }
    }

    /// The targets of one round, each once: the current node, the listed nodes, then
    /// the configured ones. With `current_last` (the node said it was going away), the
    /// current node comes last instead: it is tried only when no other node answers.
    pub(crate) fn round(&self, current_last: bool) -> Vec<Target> {
        let mut order: Vec<Target> = Vec::new();
        let listed = self.listed.iter().map(|(_, t)| t);
        for t in self
            .current
            .iter()
            .chain(listed)
            .chain(self.configured.iter())
        {
            if !order.iter().any(|k| k.addr == t.addr) {
                order.push(t.clone());
            }
        }
        if current_last && self.current.is_some() && !order.is_empty() {
            order.rotate_left(1);
        }
        order
    }

    /// The client is now connected to `target`.
    pub(crate) fn connected(&mut self, target: &Target) {
        self.current = Some(target.clone());
    }

    /// `answer` is what the node at `via` said to `Nodes`: it comes first in it and is
    /// dialed where it was reached; the others where they say, when that can be dialed.
    /// An empty answer (it should not happen) changes nothing.
    pub(crate) fn learn(&mut self, via: &Target, answer: Vec<NodeInfo>) {
        let mut answer = answer.into_iter();
        let Some(first) = answer.next() else {
            return;
        };
        let mut listed = vec![(first, via.clone())];
        for node in answer {
            let Some(target) = Target::advertised(&node.quic) else {
                continue;
            };
            if listed.iter().any(|(_, t)| t.addr == target.addr) {
                continue;
            }
            listed.push((node, target));
        }
        self.listed = listed;
    }

    /// The node of the live (or last) connection: as listed when it is, else its address
    /// alone (`id` empty: a server that does not answer `Nodes`, or no answer yet).
    pub(crate) fn current(&self) -> Option<NodeInfo> {
        let current = self.current.as_ref()?;
        let listed = self.listed.iter().find(|(_, t)| t.addr == current.addr);
        Some(match listed {
            Some((n, t)) => NodeInfo {
                quic: t.addr.clone(),
                ..n.clone()
            },
            None => NodeInfo {
                id: String::new(),
                quic: current.addr.clone(),
                https: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: &str) -> Target {
        Target::advertised(addr).expect("a usable address")
    }

    fn node(id: &str, quic: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            quic: quic.into(),
            https: Some(format!("https://{id}")),
        }
    }

    fn addrs(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.addr.as_str()).collect()
    }

    #[test]
    fn before_any_answer_a_round_is_the_configured_server_then_the_extra_nodes() {
        let configured = Target {
            addr: "127.0.0.1:7400".into(),
            name: "localhost".into(),
        };
        let book = NodeBook::new(
            configured.clone(),
            &[target("127.0.0.1:7500"), target("127.0.0.1:7400")],
        );
        assert_eq!(
            addrs(&book.round(false)),
            ["127.0.0.1:7400", "127.0.0.1:7500"]
        );
        // The configured server keeps its configured name.
        assert_eq!(book.round(false)[0].name, "localhost");
        assert_eq!(book.current(), None);
    }

    #[test]
    fn a_round_starts_at_the_current_node_then_the_listed_ones_then_the_configured_ones() {
        let a = target("10.0.0.1:7400");
        let mut book = NodeBook::new(a.clone(), &[target("10.0.0.9:7400")]);
        book.connected(&a);
        book.learn(
            &a,
            vec![
                node("a", "10.0.0.1:7400"),
                node("b", "10.0.0.2:7400"),
                node("c", "10.0.0.3:7400"),
            ],
        );
        assert_eq!(
            addrs(&book.round(false)),
            [
                "10.0.0.1:7400",
                "10.0.0.2:7400",
                "10.0.0.3:7400",
                "10.0.0.9:7400"
            ]
        );
        // a going away: the others first, a last.
        assert_eq!(
            addrs(&book.round(true)),
            [
                "10.0.0.2:7400",
                "10.0.0.3:7400",
                "10.0.0.9:7400",
                "10.0.0.1:7400"
            ]
        );
        // Failed over to c, whose answer no longer lists a: c first, a still tried last.
        let c = target("10.0.0.3:7400");
        book.connected(&c);
        book.learn(
            &c,
            vec![node("c", "10.0.0.3:7400"), node("b", "10.0.0.2:7400")],
        );
        assert_eq!(
            addrs(&book.round(false)),
            [
                "10.0.0.3:7400",
                "10.0.0.2:7400",
                "10.0.0.1:7400",
                "10.0.0.9:7400"
            ]
        );
        assert_eq!(book.current().map(|n| n.id), Some("c".to_owned()));
    }

    #[test]
    fn the_answering_node_is_dialed_where_it_was_reached_and_undialable_addresses_are_left_out() {
        // Nodes bound to every interface advertise 0.0.0.0: the answering one is where
        // the client reached it; another such node cannot be dialed from here.
        let via = Target {
            addr: "192.0.2.7:7400".into(),
            name: "sync.example.com".into(),
        };
        let mut book = NodeBook::new(via.clone(), &[]);
        book.connected(&via);
        book.learn(
            &via,
            vec![
                node("a", "0.0.0.0:7400"),
                node("b", "0.0.0.0:7401"),
                node("c", "[::]:7400"),
                node("d", "192.0.2.8:0"),
                node("e", "node-e.internal:7400"),
                node("f", "not an address"),
            ],
        );
        let round = book.round(false);
        assert_eq!(addrs(&round), ["192.0.2.7:7400", "node-e.internal:7400"]);
        assert_eq!(round[0].name, "sync.example.com");
        assert_eq!(round[1].name, "node-e.internal");
        assert_eq!(
            book.current(),
            Some(NodeInfo {
                quic: "192.0.2.7:7400".into(),
                ..node("a", "")
            })
        );
    }

    #[test]
    fn an_older_server_that_lists_nothing_leaves_the_current_node_known_by_address() {
        let a = target("127.0.0.1:7400");
        let mut book = NodeBook::new(a.clone(), &[]);
        book.connected(&a);
        book.learn(&a, Vec::new());
        assert_eq!(
            book.current(),
            Some(NodeInfo {
                id: String::new(),
                quic: "127.0.0.1:7400".into(),
                https: None,
            })
        );
        assert_eq!(addrs(&book.round(false)), ["127.0.0.1:7400"]);
    }

    #[test]
    fn ipv6_addresses_are_targets_with_their_bare_ip_as_the_name() {
        let t = target("[::1]:7400");
        assert_eq!(t.addr, "[::1]:7400");
        assert_eq!(t.name, "::1");
    }
}
