//! Bench helper, no kernel: the active's event path alone, from event datagrams to the
//! items the coalescer takes, the way before the one-pass plain decoder (each event a
//! `CtEntry`, filtered, converted) and the way now (`netlink::parse_events`, plain
//! entries in fixed fields, `Event::item`). The datagrams are `n` events of the entries
//! `ct_fill` makes, in the kernel's event layout (tuples, status, mark, id, use, timeout,
//! TCP protoinfo), one per datagram as the kernel sends them, NEW, UPDATE and DESTROY in
//! turn. The datagrams pass through recvmmsg-like slots, and only the reader's work is
//! timed (not the copy into the slots, the kernel's part). Prints each round and the
//! medians; run it under `perf record` to see where each way's time goes.
//!
//! `ct_events [n] [rounds]` (default 300000 events, 7 rounds).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use igw_conntrack_sync::ct::{
    self, CtAttr, CtEntry, CtMessage, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW,
    NFNL_SUBSYS_CTNETLINK, NLM_F_CREATE, NLM_F_EXCL, NlHeader,
};
use igw_conntrack_sync::netlink::{self, EventKind};
use igw_conntrack_sync::proto::Item;
use igw_conntrack_sync::state::Filter;

/// Datagrams per recvmmsg(2) in the daemon, each in a slot of its own, and events per
/// hand-over to the coalescer.
const BATCH: usize = 64;
const SLOT: usize = 8192;
const DRAIN_MAX: usize = 4096;

fn datagram(i: u32, out: &mut Vec<u8>) {
    let e = common::entry(i, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)));
    let (msg, flags) = match i % 3 {
        0 => (IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL),
        1 => (IPCTNL_MSG_CT_NEW, 0),
        _ => (IPCTNL_MSG_CT_DELETE, 0),
    };
    let mut attrs = vec![
        CtAttr::TupleOrig(e.orig.clone()),
        CtAttr::TupleReply(e.reply.clone()),
        CtAttr::Status(e.status),
        CtAttr::Mark(e.mark),
        CtAttr::Id(i),
        CtAttr::Use(1),
        CtAttr::Timeout(e.timeout),
    ];
    attrs.extend(e.protoinfo.clone().map(CtAttr::ProtoInfo));
    CtMessage {
        header: NlHeader {
            kind: (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(msg),
            flags,
            seq: 0,
            pid: 0,
        },
        family: libc::AF_INET as u8,
        version: 0,
        res_id: 0,
        attrs,
    }
    .emit(out);
}

/// The event reader before the plain decoder: each event decoded into a `CtEntry`.
fn old_parse(buf: &[u8], out: &mut Vec<(EventKind, CtEntry)>) {
    for (h, body) in ct::split_messages(buf).expect("split") {
        let Some(kind) = netlink::event_kind(&h) else {
            continue;
        };
        if let Some(e) = CtEntry::decode(&body[4..]).expect("decode") {
            out.push((kind, e));
        }
    }
}

/// One way of reading events: `parse` appends the events of one datagram to the burst,
/// `items` turns the burst into what the coalescer takes.
trait Way {
    type Event;
    fn parse(d: &[u8], out: &mut Vec<Self::Event>);
    fn items(evs: &[Self::Event], f: &Filter, items: &mut Vec<Item>);
}

struct Old;

impl Way for Old {
    type Event = (EventKind, CtEntry);
    fn parse(d: &[u8], out: &mut Vec<Self::Event>) {
        old_parse(d, out);
    }
    fn items(evs: &[Self::Event], f: &Filter, items: &mut Vec<Item>) {
        for (kind, e) in evs {
            if !f.accepts(e) {
                continue;
            }
            items.push(match kind {
                EventKind::Destroy => Item::delete(e),
                EventKind::New | EventKind::Update => Item::upsert(e),
            });
        }
    }
}

struct New;

impl Way for New {
    type Event = netlink::Event;
    fn parse(d: &[u8], out: &mut Vec<Self::Event>) {
        netlink::parse_events(d, out).expect("parse");
    }
    fn items(evs: &[Self::Event], f: &Filter, items: &mut Vec<Item>) {
        items.extend(evs.iter().filter_map(|ev| ev.item(f)));
    }
}

/// The event thread's work on `dgrams`, as in the daemon: each batch of datagrams lands in
/// the recvmmsg(2) slots (copied there untimed: the kernel's part), is parsed into the
/// burst, and each burst becomes items. Returns the timed nanoseconds.
fn run<W: Way>(dgrams: &[Vec<u8>], f: &Filter, slots: &mut [u8], items: &mut Vec<Item>) -> f64 {
    let mut evs = Vec::new();
    let mut ns = 0.0;
    for burst in dgrams.chunks(DRAIN_MAX) {
        evs.clear();
        for batch in burst.chunks(BATCH) {
            for (i, d) in batch.iter().enumerate() {
                slots[i * SLOT..i * SLOT + d.len()].copy_from_slice(d);
            }
            let t = Instant::now();
            for (i, d) in batch.iter().enumerate() {
                W::parse(&slots[i * SLOT..i * SLOT + d.len()], &mut evs);
            }
            ns += t.elapsed().as_secs_f64() * 1e9;
        }
        let t = Instant::now();
        W::items(&evs, f, items);
        ns += t.elapsed().as_secs_f64() * 1e9;
    }
    ns
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(300_000, |s| s.parse().expect("n"));
    let rounds: u32 = args.next().map_or(7, |s| s.parse().expect("rounds"));
    let dgrams: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut d = Vec::new();
            datagram(i, &mut d);
            d
        })
        .collect();
    let filter = Filter {
        sources: vec!["198.18.0.0/16".parse().expect("net")],
        snat: true,
        exclude: ["198.19.255.1", "198.19.255.0", "198.51.100.1"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect(),
    };
    let mut slots = vec![0u8; BATCH * SLOT];
    // Both ways give the same items.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    run::<Old>(&dgrams, &filter, &mut slots, &mut a);
    run::<New>(&dgrams, &filter, &mut slots, &mut b);
    assert_eq!(a, b);
    assert_eq!(a.len(), n as usize);
    let (mut old_ns, mut new_ns) = (Vec::new(), Vec::new());
    let mut items = Vec::with_capacity(n as usize);
    for round in 0..rounds {
        items.clear();
        let o = run::<Old>(&dgrams, &filter, &mut slots, &mut items) / f64::from(n);
        std::hint::black_box(&items);
        items.clear();
        let w = run::<New>(&dgrams, &filter, &mut slots, &mut items) / f64::from(n);
        std::hint::black_box(&items);
        println!("round {round}: {n} events: old {o:.1} ns/event, new {w:.1} ns/event");
        old_ns.push(o);
        new_ns.push(w);
    }
    let (o, w) = (median(&mut old_ns), median(&mut new_ns));
    println!(
        "median of {rounds}: old {o:.1} ns/event, new {w:.1} ns/event ({:.2}x)",
        o / w
    );
}
