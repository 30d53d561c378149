//! `nervix serve` over TLS as an operator runs it, and the CLI as an agent developer uses it
//! against a private deployment (a CA made up here with rcgen):
//! - the CLI refuses the server without the CA, and works with `--ca-file`; an agent enrolled
//!   with `--ca-file` keeps the CA in its profile, so later commands need no flag;
//! - a certificate renewed on disk is served after SIGHUP, with the periodic reload set to an
//!   hour so that only the signal can explain it; Python's stock `ssl` module reads what is
//!   served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{nervix, signal_and_wait};
use nervix_client::{Client, Trust};
use nix::sys::signal::Signal;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Nervix CLI test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A fresh certificate for localhost: its PEM, its key's PEM, and its DER in hex.
    fn issue(&self) -> (String, String, String) {
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let hex = cert.der().iter().map(|b| format!("{b:02x}")).collect();
        (cert.pem(), key.serialize_pem(), hex)
    }
}

/// Replaces `path`'s content the way renewal tools do: a new file renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The certificate the server presents, as Python's `ssl` module reads it (DER in hex);
/// `None` where there is no python3 outside CI.
async fn served(port: u16) -> Option<String> {
    let script = format!(
        "import ssl; print(ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(('127.0.0.1', \
         {port}))).hex())"
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await;
    match out {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
        }
        Ok(out) => panic!(
            "python3 ssl: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIP: reading the served certificate needs python3 ({e})");
            None
        }
        Err(e) => panic!("CI: python3 is required to read the served certificate: {e}"),
    }
}

/// `nervix ARGS` off the runtime's threads: (success, stdout, stderr).
async fn cli(args: Vec<String>, token: Option<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut c = nervix();
        c.args(&args);
        if let Some(t) = token {
            c.env("NERVIX_TOKEN", t);
        }
        let out = c.output().expect("run nervix");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_trusts_a_private_ca_and_serve_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let ca = Ca::new();
    let (cert_pem, key_pem, first) = ca.issue();
    std::fs::write(path("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(path("cert.pem"), &cert_pem).unwrap();
    std::fs::write(path("key.pem"), &key_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("https://localhost:{port}");
    let log = std::fs::File::create(path("serve.log")).unwrap();
    let mut server = nervix()
        .arg("serve")
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &path("data")])
        .args([
            "--tls-cert",
            &path("cert.pem"),
            "--tls-key",
            &path("key.pem"),
        ])
        // Only SIGHUP can make the server read the files again within this test.
        .args(["--tls-reload-secs", "3600"])
        .args(["--rate-limit-enroll", "0", "--rate-limit-agent", "0"])
        .args(["--sqlite-writer-cpu", "off"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run nervix serve");
    let trusted = Client::with_trust(&base, Trust::with_ca_file(path("ca.pem")).unwrap()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while trusted.readiness().await.is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            panic!(
                "nervix serve exited ({status}): {}",
                std::fs::read_to_string(path("serve.log")).unwrap()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready over HTTPS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, stdout, stderr) = cli(
        strings(&["admin", "create-token", "--data-dir", &path("data")]),
        None,
    )
    .await;
    assert!(ok, "{stdout}{stderr}");
    let token = stdout.split_whitespace().last().unwrap().to_owned();

    // Without the CA the CLI refuses the server; with `--ca-file` it works.
    let list = |ca: bool| {
        let mut args = strings(&["task", "list", "--all", "--server", &base, "--json"]);
        if ca {
            args.extend(strings(&["--ca-file", &path("ca.pem")]));
        }
        cli(args, Some(token.clone()))
    };
    let (ok, stdout, stderr) = list(false).await;
    assert!(!ok, "verified without the CA: {stdout}");
    assert!(
        stderr.to_lowercase().contains("certificate") || stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = list(true).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.trim_start().starts_with('['), "{stdout}");

    // An agent enrolled with `--ca-file` keeps the CA in its profile.
    let profile = path("agent.json");
    let (ok, stdout, stderr) = cli(
        strings(&[
            "agent",
            "enroll",
            "--server",
            &base,
            "--ca-file",
            &path("ca.pem"),
            "--agent-id",
            "tls-writer",
            "--capabilities",
            "writing",
            "--key",
            &path("agent.key"),
            "--config",
            &profile,
        ]),
        None,
    )
    .await;
    assert!(ok, "{stdout}{stderr}");
    let status = || {
        cli(
            strings(&["agent", "status", "--json", "--config", &profile]),
            None,
        )
    };
    let (ok, stdout, stderr) = status().await;
    assert!(ok, "the profile's CA: {stdout}{stderr}");
    assert!(stdout.contains("tls-writer"), "{stdout}");

    // Renewal: new files alone change nothing for an hour; SIGHUP serves them at once.
    let Some(served_first) = served(port).await else {
        signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;
        return;
    };
    assert_eq!(served_first, first);
    let (cert_pem, key_pem, renewed) = ca.issue();
    replace(Path::new(&path("key.pem")), &key_pem);
    replace(Path::new(&path("cert.pem")), &cert_pem);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        served(port).await.unwrap(),
        first,
        "reloaded without a signal"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.id()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served(port).await.unwrap() != renewed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate is not served after SIGHUP: {}",
            std::fs::read_to_string(path("serve.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server lived through the signal, and the CLI still verifies it.
    assert!(
        server.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );
    let (ok, stdout, stderr) = status().await;
    assert!(ok, "after the renewal: {stdout}{stderr}");
    let log = std::fs::read_to_string(path("serve.log")).unwrap();
    assert!(log.contains("SIGHUP: TLS certificate reloaded"), "{log}");
    signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;
}
