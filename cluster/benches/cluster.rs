//! Micro-benchmarks of the cluster's hot or latency-relevant pure functions: the planner (run
//! on every membership change, must stay far below a join's budget) and the peer frame codec
//! (every migrated entry and every forwarded request goes through it), and one slot's migration
//! between two engine shards through `CoreMigrations` and the codec (no sockets).

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
        attempt: 1,
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
        protocol: tessera_cluster::wire::ReplyProtocol::Resp2,
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

/// One slot of `n` entries (100-byte values) streamed from one `Shard` into an empty one: both
/// sides' `CoreMigrations`, `ShardStore`, every message encoded and decoded, until the source
/// waits for its commit (scan, apply, digests on both sides included).
fn migrate_slot(c: &mut Criterion) {
    use tessera_cluster::store::ShardStore;
    use tessera_cluster::{
        key_slot, CoreMigrations, MigrationConfig, ShardAddr, SlotState, SourcePhase, To,
    };
    use tessera_engine::{Command, EngineConfig, Shard, SlotCursor};

    let entries = 20_000u64;
    let (a, b) = (node(1, 1), node(2, 1));
    let mut table = plan(
        None,
        std::slice::from_ref(&a),
        a.id,
        &PlannerConfig::default(),
    );
    table.nodes = vec![a.clone(), b.clone()];
    let slot = key_slot(b"s");
    table.epoch = 2;
    table.slots[usize::from(slot)].state = SlotState::Migrating {
        from: tessera_cluster::Shard { node: 0, core: 0 },
        to: tessera_cluster::Shard { node: 1, core: 0 },
        id: MigrationId(7),
    };
    table.validate().expect("valid table");
    let now = 1_800_000_000_000u64;
    let mut src = Shard::new(EngineConfig::default());
    let value = vec![b'v'; 100];
    for i in 0..entries {
        let args = [
            bytes::Bytes::from_static(b"SET"),
            bytes::Bytes::from(format!("{{s}}k{i}")),
            bytes::Bytes::from(value.clone()),
        ];
        src.execute(Command::parse(&args).unwrap(), now);
    }
    let cfg = WireConfig::default();
    let mut g = c.benchmark_group("migrate one slot between two shards");
    g.throughput(Throughput::Elements(entries));
    g.sample_size(10);
    g.bench_function("20k entries x 100 B, 256 per batch", |bench| {
        bench.iter_batched(
            || Shard::new(EngineConfig::default()),
            |mut dst| {
                let me_a = ShardAddr {
                    node: a.id,
                    core: 0,
                };
                let me_b = ShardAddr {
                    node: b.id,
                    core: 0,
                };
                let mcfg = MigrationConfig::default();
                let mut ha: CoreMigrations<SlotCursor> = CoreMigrations::new(me_a, mcfg.clone());
                let mut hb: CoreMigrations<SlotCursor> = CoreMigrations::new(me_b, mcfg);
                let mut to_b = ha.on_table(&table, now, &mut ShardStore::new(&mut src, now));
                hb.on_table(&table, now, &mut ShardStore::new(&mut dst, now));
                let mut frame = AlignedVec::<16>::new();
                let mut dec_b = FrameDecoder::new(cfg.clone());
                let mut dec_a = FrameDecoder::new(cfg.clone());
                for _ in 0..1_000_000 {
                    if to_b.is_empty() {
                        to_b = ha.poll(now, &mut ShardStore::new(&mut src, now));
                    }
                    if ha.source(slot).map(tessera_cluster::SourceMigration::phase)
                        == Some(SourcePhase::AwaitingCommit)
                    {
                        return;
                    }
                    let mut to_a = Vec::new();
                    for env in to_b.drain(..) {
                        if env.to == To::Coordinator {
                            continue;
                        }
                        frame.clear();
                        encode(&env.message, &mut frame, &cfg).unwrap();
                        dec_b.extend(&frame);
                        let msg = dec_b
                            .next_frame()
                            .unwrap()
                            .unwrap()
                            .message
                            .to_owned_message();
                        to_a.extend(hb.on_message(
                            a.id,
                            &msg.unwrap(),
                            now,
                            &mut ShardStore::new(&mut dst, now),
                        ));
                    }
                    for env in to_a {
                        frame.clear();
                        encode(&env.message, &mut frame, &cfg).unwrap();
                        dec_a.extend(&frame);
                        let msg = dec_a
                            .next_frame()
                            .unwrap()
                            .unwrap()
                            .message
                            .to_owned_message();
                        to_b.extend(ha.on_message(
                            b.id,
                            &msg.unwrap(),
                            now,
                            &mut ShardStore::new(&mut src, now),
                        ));
                    }
                }
                panic!("the migration did not reach its handoff");
            },
            criterion::BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, planner, codec, migrate_slot);
criterion_main!(benches);
