//! The lab's plumbing over rtnetlink: network namespaces, veth pairs, addresses, routes and
//! per-namespace sysctls, with no `ip` processes. Work inside a namespace runs on a thread
//! of its own that has joined it (setns), with a netlink socket opened there; the caller's
//! namespace is never changed.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, NetworkNamespace, RouteMessageBuilder,
    new_connection,
};

/// One change inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a link up (by name).
    Up(String),
    /// Create a veth pair here, and move its peer into namespace `peer_ns`.
    Veth {
        name: String,
        peer: String,
        peer_ns: String,
    },
    Addr {
        ifname: String,
        net: IpNet,
    },
    /// Route `dst` (`None`: default) via a gateway.
    Route {
        dst: Option<IpNet>,
        via: IpAddr,
    },
    /// Write a sysctl of this namespace (`net/ipv4/ip_forward`, "1").
    Sysctl {
        key: String,
        value: String,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// Creates a named namespace (`/run/netns/<name>`, as `ip netns add` does).
pub fn add_namespace(name: &str) -> Result<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        runtime()?
            .block_on(NetworkNamespace::add(name.clone()))
            .map_err(|e| anyhow!("create namespace {name}: {e}"))
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?
}

/// Applies `ops` in order inside namespace `ns`; stops at the first failure, naming it.
pub fn apply(ns: &str, ops: Vec<Op>) -> Result<()> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> Result<()> {
        let f =
            File::open(format!("/run/netns/{ns}")).with_context(|| format!("namespace {ns}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("join namespace {ns}"))?;
        runtime()?.block_on(async {
            let (conn, handle, _) = new_connection().context("netlink socket")?;
            tokio::spawn(conn);
            for op in ops {
                run(&handle, &op)
                    .await
                    .with_context(|| format!("{ns}: {op:?}"))?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?
}

async fn index(h: &Handle, name: &str) -> Result<u32> {
    let link = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await?;
    link.map(|l| l.header.index)
        .ok_or_else(|| anyhow!("no link {name}"))
}

async fn run(h: &Handle, op: &Op) -> Result<()> {
    match op {
        Op::Up(name) => {
            h.link()
                .set(LinkUnspec::new_with_name(name).up().build())
                .execute()
                .await?
        }
        Op::Veth {
            name,
            peer,
            peer_ns,
        } => {
            // The peer is born in its namespace (IFLA_NET_NS_FD in the peer's message), so
            // both ends may share a name and nothing ever appears in the caller's namespace.
            let target = File::open(format!("/run/netns/{peer_ns}"))
                .with_context(|| format!("namespace {peer_ns}"))?;
            let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
                .name(peer.clone())
                .setns_by_fd(target.as_raw_fd())
                .build();
            let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(name.clone())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
                .build();
            h.link().add(msg).execute().await?;
        }
        Op::Addr { ifname, net } => {
            let idx = index(h, ifname).await?;
            h.address()
                .add(idx, net.addr(), net.prefix_len())
                .execute()
                .await?;
        }
        Op::Route { dst, via } => {
            let msg = match (dst, via) {
                (None, IpAddr::V4(v)) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .gateway(*v)
                    .build(),
                (None, IpAddr::V6(v)) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .gateway(*v)
                    .build(),
                (Some(IpNet::V4(d)), IpAddr::V4(v)) => {
                    RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                        .destination_prefix(d.addr(), d.prefix_len())
                        .gateway(*v)
                        .build()
                }
                (Some(IpNet::V6(d)), IpAddr::V6(v)) => {
                    RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                        .destination_prefix(d.addr(), d.prefix_len())
                        .gateway(*v)
                        .build()
                }
                _ => return Err(anyhow!("route and gateway of different families")),
            };
            h.route().add(msg).execute().await?;
        }
        Op::Sysctl { key, value } => {
            // /proc/sys/net belongs to the namespace of the thread that opens it: this one.
            std::fs::write(format!("/proc/sys/{key}"), value)
                .with_context(|| format!("sysctl {key}"))?;
        }
    }
    Ok(())
}
