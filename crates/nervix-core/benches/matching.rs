#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Ranking one task against 100,000 indexed agents.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nervix_core::matching::{AgentProfile, CapabilityIndex, TaskProfile};
use nervix_core::{Complexity, Reputation};
use uuid::Uuid;

const AGENTS: usize = 100_000;
const VOCABULARY: usize = 50;

/// xorshift64*: deterministic and dependency-free; quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn capability(i: usize) -> String {
    format!("cap-{i:02}")
}

/// Capabilities are skewed towards low numbers (the product of two uniform draws), so that
/// `cap-00` is common and the tail is rare, as real skill tags are.
fn build_index() -> CapabilityIndex {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut index = CapabilityIndex::new();
    for n in 0..AGENTS {
        let count = 1 + rng.below(6) as usize;
        let capabilities = (0..count)
            .map(|_| {
                let skewed = rng.below(VOCABULARY as u64) * rng.below(VOCABULARY as u64);
                capability((skewed / VOCABULARY as u64) as usize)
            })
            .collect();
        index.upsert(AgentProfile {
            id: Uuid::from_u128(n as u128 + 1),
            capabilities,
            reputation: Reputation::from_hundredths(rng.below(10_001) as i64),
            completed_tasks: rng.below(40) as i64,
            online: rng.below(2) == 0,
            available: rng.below(10) != 0,
            suspended: rng.below(100) == 0,
            active_tasks: rng.below(4) as u32,
            max_concurrent_tasks: 1 + rng.below(5) as u32,
            recent_success_permille: rng.below(1001) as u32,
        });
    }
    index
}

fn task(capabilities: &[&str]) -> TaskProfile {
    TaskProfile {
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        complexity: Complexity::Simple,
        min_reputation: Reputation::from_hundredths(2000),
        posted_by: Uuid::nil(),
    }
}

fn rank_100k_agents(c: &mut Criterion) {
    let index = build_index();
    let exclude: HashSet<Uuid> = (1..=10u128).map(Uuid::from_u128).collect();
    let cases = [
        ("one_capability", task(&["cap-00"])),
        ("two_capabilities", task(&["cap-00", "cap-03"])),
        ("no_capabilities", task(&[])),
    ];

    let mut group = c.benchmark_group("rank_100k_agents");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, task) in &cases {
        assert_eq!(
            index.rank(task, &exclude, 5).len(),
            5,
            "{name} finds candidates"
        );
        group.bench_function(*name, |b| {
            b.iter(|| index.rank(black_box(task), black_box(&exclude), black_box(5)))
        });
    }
    group.finish();
}

criterion_group!(benches, rank_100k_agents);
criterion_main!(benches);
