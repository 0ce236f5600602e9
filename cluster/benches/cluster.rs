//! Micro-benchmarks of the cluster's hot or latency-relevant pure functions: the planner (run
//! on every membership change, must stay far below a join's budget) and the peer frame codec
//! (every migrated entry and every forwarded request goes through it).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rkyv::util::AlignedVec;
use tessera_cluster::{
    encode, plan, Entry, FrameDecoder, Message, MigrateBatch, MigrationId, NodeId, NodeInfo,
    PlannerConfig, StreamOp, WireConfig,
};

fn node(n: u8, cores: u16) -> NodeInfo {
    NodeInfo {
        id: NodeId([n; 20]),
        host: "127.0.0.1".into(),
        client_port: 7000 + u16::from(n),
        peer_port: 17000 + u16::from(n),
        gossip_port: 27000 + u16::from(n),
        cores,
        generation: 1,
    }
}

fn planner(c: &mut Criterion) {
    let eight: Vec<NodeInfo> = (1..=8).map(|n| node(n, 4)).collect();
    let base = plan(None, &eight, eight[0].id, &PlannerConfig::default());
    let nine: Vec<NodeInfo> = (1..=9).map(|n| node(n, 4)).collect();
    c.bench_function("plan first table, 8 nodes x 4 cores", |b| {
        b.iter(|| {
            plan(
                None,
                black_box(&eight),
                eight[0].id,
                &PlannerConfig::default(),
            )
        });
    });
    c.bench_function("plan join 8 -> 9 nodes x 4 cores", |b| {
        b.iter(|| {
            plan(
                Some(black_box(&base)),
                black_box(&nine),
                eight[0].id,
                &PlannerConfig::default(),
            )
        });
    });
}

fn codec(c: &mut Criterion) {
    let batch = Message::MigrateBatch(MigrateBatch {
        id: MigrationId(1),
        slot: 7,
        first_seq: 0,
        ops: (0..256u64)
            .map(|i| {
                StreamOp::Put(Entry {
                    map: b"default".to_vec(),
                    key: format!("key:{i:08}").into_bytes(),
                    value: vec![0xAB; 100],
                    version: i,
                    deadline_ms: Some(1_700_000_000_000 + i),
                })
            })
            .collect(),
    });
    let cfg = WireConfig::default();
    let mut frame = AlignedVec::<16>::new();
    encode(&batch, &mut frame, &cfg).unwrap();
    let mut g = c.benchmark_group("frame: migrate batch of 256 x 100-byte entries");
    g.throughput(Throughput::Elements(256));
    g.bench_function("encode", |b| {
        let mut out = AlignedVec::<16>::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            encode(black_box(&batch), &mut out, &cfg).unwrap();
        });
    });
    g.bench_function("decode + validate (CRC, bytecheck)", |b| {
        let mut dec = FrameDecoder::new(cfg.clone());
        b.iter(|| {
            dec.extend(black_box(&frame));
            let f = dec.next_frame().unwrap().unwrap();
            black_box(f.kind);
        });
    });
    g.finish();
    let forward = Message::Forward {
        request_id: 1,
        slot: 3,
        core: 0,
        payload: b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n".to_vec(),
    };
    let mut small = AlignedVec::<16>::new();
    encode(&forward, &mut small, &cfg).unwrap();
    c.bench_function("frame: forward SET round trip", |b| {
        let mut out = AlignedVec::<16>::new();
        let mut dec = FrameDecoder::new(cfg.clone());
        b.iter(|| {
            out.clear();
            encode(black_box(&forward), &mut out, &cfg).unwrap();
            dec.extend(&out);
            black_box(dec.next_frame().unwrap().unwrap().kind);
        });
    });
}

criterion_group!(benches, planner, codec);
criterion_main!(benches);
