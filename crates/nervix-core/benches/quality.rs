#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every check of the standard pipeline on a generated 2,000-line source file (target < 20 ms)
//! and on a 1 MiB JSON document against a schema (target < 50 ms); then the checks that matter
//! one at a time (`quality parts`), to see which dominates.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nervix_core::quality::{
    quality_score, CheckPipeline, JsonSchema, Lint, SecretScan, SizeLimit, Submission, Syntax,
    DEFAULT_MIN_WORDS,
};
use nervix_core::TaskKind;
use serde_json::{json, Value};

/// A Rust file of `lines` lines: functions with loops, conditions, comments and strings.
fn rust_source(lines: usize) -> String {
    let mut out = String::from("use std::collections::HashMap;\n\n");
    let mut i = 0;
    while out.lines().count() < lines {
        out.push_str(&format!(
            "/// Sums the values of bucket {i} above a threshold.\n\
             pub fn bucket_{i}(values: &[i64], threshold: i64) -> i64 {{\n\
             \x20   let mut total = 0;\n\
             \x20   let mut seen: HashMap<i64, usize> = HashMap::new();\n\
             \x20   for v in values {{\n\
             \x20       if *v > threshold {{\n\
             \x20           total += v * {i};\n\
             \x20       }} else {{\n\
             \x20           *seen.entry(*v).or_default() += 1;\n\
             \x20       }}\n\
             \x20   }}\n\
             \x20   println!(\"bucket {i}: {{}} values seen\", seen.len());\n\
             \x20   total\n\
             }}\n\n"
        ));
        i += 1;
    }
    out
}

/// About 1 MiB of records matching [`schema`].
fn json_document() -> Value {
    let records: Vec<Value> = (0..7_000)
        .map(|i| {
            json!({
                "id": i,
                "name": format!("record number {i}"),
                "email": format!("user{i}@example.com"),
                "tags": ["alpha", "beta", format!("t{}", i % 17)],
                "score": (i % 100) as f64 / 7.0,
                "active": i % 3 == 0,
                "address": {"street": format!("{i} Main Street"), "city": "Springfield", "zip": format!("{:05}", i)}
            })
        })
        .collect();
    json!({"records": records})
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "email", "tags", "score", "active", "address"],
                    "properties": {
                        "id": {"type": "integer", "minimum": 0},
                        "name": {"type": "string", "minLength": 1},
                        "email": {"type": "string", "pattern": "^[^@]+@[^@]+$"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "score": {"type": "number"},
                        "active": {"type": "boolean"},
                        "address": {
                            "type": "object",
                            "required": ["street", "city", "zip"],
                            "properties": {
                                "street": {"type": "string"},
                                "city": {"type": "string"},
                                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                            }
                        }
                    }
                }
            }
        }
    })
}

fn bench(c: &mut Criterion) {
    let pipeline = CheckPipeline::standard(4 << 20);

    let source = json!(rust_source(2_000));
    let code = Submission {
        kind: TaskKind::Code,
        output_schema: None,
        language: Some("rust"),
        min_words: DEFAULT_MIN_WORDS,
        content: &source,
    };
    let checks = pipeline.run(&code);
    assert!(checks.iter().all(|c| c.passed), "{checks:?}");
    assert_eq!(
        checks.len(),
        5,
        "non_empty, size_limit, syntax, lint, secret_scan"
    );

    let doc = json_document();
    let size = serde_json::to_vec(&doc).unwrap().len();
    assert!(
        (1 << 20..5 << 19).contains(&size),
        "document is {size} bytes"
    );
    let schema = schema();
    let json_sub = Submission {
        kind: TaskKind::Json,
        output_schema: Some(&schema),
        language: None,
        min_words: 0,
        content: &doc,
    };
    let checks = pipeline.run(&json_sub);
    assert!(checks.iter().all(|c| c.passed), "{checks:?}");

    let mut group = c.benchmark_group("quality");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("all checks, 2000-line rust file", |b| {
        b.iter(|| quality_score(&pipeline.run(black_box(&code))))
    });
    group.bench_function("all checks, 1 MiB json against a schema", |b| {
        b.iter(|| quality_score(&pipeline.run(black_box(&json_sub))))
    });
    group.finish();

    // Each check in a pipeline of its own. `syntax` includes parsing; `lint` parses too (the
    // tree is shared only within one run), so lint's own cost is the difference of the two.
    let parts: [(&str, CheckPipeline, &Submission<'_>); 6] = [
        (
            "rust: syntax (parse)",
            CheckPipeline::new().with(Syntax),
            &code,
        ),
        (
            "rust: lint (parse + lint)",
            CheckPipeline::new().with(Lint),
            &code,
        ),
        (
            "rust: secret_scan",
            CheckPipeline::new().with(SecretScan),
            &code,
        ),
        (
            "json: json_schema",
            CheckPipeline::new().with(JsonSchema),
            &json_sub,
        ),
        (
            "json: secret_scan",
            CheckPipeline::new().with(SecretScan),
            &json_sub,
        ),
        (
            "json: size_limit",
            CheckPipeline::new().with(SizeLimit { max_bytes: 4 << 20 }),
            &json_sub,
        ),
    ];
    let mut group = c.benchmark_group("quality parts");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for (name, pipeline, sub) in &parts {
        group.bench_function(*name, |b| b.iter(|| pipeline.run(black_box(sub))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
