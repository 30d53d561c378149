//! Micro-benchmarks of the two cryptographic checks on the hot path: an enrollment/login
//! signature (`verify_strict`) and a bearer token (EdDSA JWT with claim validation), and of a
//! bearer token whose verdict is remembered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use nervix_core::Role;
use nervix_server::auth::{self, keys::KeyRing};

fn signature_verification(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key();
    let challenge = "nervix-enroll-v1:01938b3e-7c1a-7d2e-9f00-000000000000:q8Jx3m1S0Yv6m3rQ8o4tN9t2h5d7f1a0c3e6g9i2k4m";
    let signature = key.sign(challenge.as_bytes());
    c.bench_function("ed25519_verify_strict_challenge", |b| {
        b.iter(|| {
            public
                .verify_strict(std::hint::black_box(challenge.as_bytes()), &signature)
                .unwrap()
        })
    });
}

fn token_verification(c: &mut Criterion) {
    let ring = KeyRing::generate();
    let issued = auth::issue(
        &ring,
        uuid::Uuid::now_v7(),
        "bench-agent",
        Role::Agent,
        None,
        chrono::Utc::now(),
        chrono::Duration::days(90),
    )
    .expect("issue");
    c.bench_function("jwt_eddsa_verify", |b| {
        b.iter(|| auth::verify(&ring, std::hint::black_box(&issued.token)).unwrap())
    });
    // What an authenticated request pays for its token after the first time it is seen.
    let verified = auth::VerifiedTokens::default();
    c.bench_function("jwt_verify_remembered", |b| {
        b.iter(|| {
            verified
                .verify(
                    &ring,
                    std::hint::black_box(&issued.token),
                    chrono::Utc::now(),
                )
                .unwrap()
        })
    });
    c.bench_function("jwt_eddsa_issue", |b| {
        b.iter(|| {
            auth::issue(
                &ring,
                uuid::Uuid::now_v7(),
                "bench-agent",
                Role::Agent,
                None,
                chrono::Utc::now(),
                chrono::Duration::days(90),
            )
            .expect("issue")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = signature_verification, token_verification
}
criterion_main!(benches);
