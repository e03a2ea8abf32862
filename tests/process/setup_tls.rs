//! `setup::init()` to `https` endpoints (feature `otlp-tls`): a certificate authority made for
//! the test (rcgen), an OTLP/HTTP receiver behind rustls and an OTLP/gRPC receiver behind
//! tonic's TLS, both asking for a client certificate — what a Collector with `tls:` and
//! `client_ca_file:` does.
#![cfg(feature = "otlp-tls")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use tokio_rustls::rustls;
use tower_otel_http::setup::Setup;

use crate::setup_env::{
    grpc_receiver_with, one_request, posted, receiver_app, says, GrpcSink, Posts,
};

/// A certificate authority, a server certificate for `localhost` and `127.0.0.1`, and a client
/// certificate, all signed by it: PEM text, and the files the variables name.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "tower-otel-http test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: &[&str], usage| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key_pem) = leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = std::env::temp_dir().join(format!("tower-otel-http-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki {
            dir,
            ca_pem: ca.pem(),
            server_pem,
            server_key_pem,
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("client.pem"), client_pem).unwrap();
        std::fs::write(pki.path("client.key"), client_key_pem).unwrap();
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }

    /// The certificate variables, general or of one signal (`TRACES_`, ...).
    fn set_env(&self, signal: &str, ca: bool, client: bool) {
        let var = |what: &str| format!("OTEL_EXPORTER_OTLP_{signal}{what}");
        if ca {
            std::env::set_var(var("CERTIFICATE"), self.path("ca.pem"));
        }
        if client {
            std::env::set_var(var("CLIENT_CERTIFICATE"), self.path("client.pem"));
            std::env::set_var(var("CLIENT_KEY"), self.path("client.key"));
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why the receiver's handshakes failed, in order.
type Refused = Arc<Mutex<Vec<String>>>;

/// An OTLP/HTTP receiver over TLS (rustls, HTTP/1.1) that asks for a client certificate signed
/// by the test's authority; `refused` says why each failed handshake failed.
async fn https_receiver(pki: &Pki) -> (SocketAddr, Posts, Refused) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let posts = Posts::default();
    let app = receiver_app(&posts);
    let refused = Refused::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app, count) = (acceptor.clone(), app.clone(), count.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(
                                hyper_util::rt::TokioIo::new(tls),
                                hyper_util::service::TowerToHyperService::new(app),
                            )
                            .await;
                    }
                    Err(e) => count.lock().unwrap().push(e.to_string()),
                }
            });
        }
    });
    (addr, posts, refused)
}

/// OTLP/HTTP to an `https` endpoint with the certificate variables: the server is trusted through
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` alone, and shown the client certificate it asks for; traces,
/// metrics and logs arrive.
pub async fn otlp_https_with_a_client_certificate() {
    let pki = Pki::new();
    let (addr, posts, refused) = https_receiver(&pki).await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://{addr}"));
    one_request_with_every_certificate(
        &pki,
        &format!("https://{addr}/v1/traces (tls: the given roots, a client certificate)"),
    )
    .await;
    for signal in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        assert!(
            posted(&posts, signal) > 0,
            "nothing at {signal}: {:?}",
            posts.lock().unwrap()
        );
    }
    assert!(
        refused.lock().unwrap().is_empty(),
        "{:?}",
        refused.lock().unwrap()
    );
}

/// What is not trusted is not sent to: without `OTEL_EXPORTER_OTLP_CERTIFICATE` the test's
/// authority is not among the system's roots (made hermetic: `SSL_CERT_FILE` names an unrelated
/// authority) and the client refuses the server (the server hears `UnknownCA`); without the
/// client certificate the server refuses the client (it was sent none). Nothing arrives either
/// way; the set-up and the shutdown still succeed (the failure is the exporter's, not the app's).
pub async fn otlp_https_trusts_only_what_it_is_told() {
    let pki = Pki::new();
    let lines = crate::common::Buf::default();
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere".into()]).unwrap();
    std::fs::write(pki.path("system.pem"), other.cert.pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", pki.path("system.pem"));
    std::env::set_var("OTEL_TRACES_EXPORTER", "otlp");
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    for (ca, client, summary, heard) in [
        (
            false,
            true,
            "(tls: the system's roots, a client certificate)",
            "UnknownCA",
        ),
        (
            true,
            false,
            "(tls: the given roots)",
            "peer sent no certificates",
        ),
    ] {
        // a receiver of each round's own: no late handshake of the last round in this one's
        let (addr, posts, refused) = https_receiver(&pki).await;
        // per signal: the traces' endpoint and files
        std::env::set_var(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("https://{addr}/v1/traces"),
        );
        for v in ["CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"] {
            std::env::remove_var(format!("OTEL_EXPORTER_OTLP_TRACES_{v}"));
        }
        pki.set_env("TRACES_", ca, client);
        // the first round's lines are kept (a subscriber is installed once in a process)
        let guard = Setup::new()
            .with_subscriber(!ca)
            .with_log_writer(lines.clone())
            .with_shutdown_timeout(Duration::from_secs(8))
            .install()
            .expect("init");
        says(&guard, summary);
        let tracer = guard.tracer_provider().expect("traces").tracer("t");
        tracer.start("not sent").end();
        guard.shutdown();
        assert_eq!(posted(&posts, "/v1/traces"), 0, "ca {ca}, client {client}");
        let why = refused.lock().unwrap().clone();
        assert!(
            !why.is_empty() && why.iter().all(|w| w.contains(heard)),
            "ca {ca}, client {client}: the server heard {why:?}"
        );
    }
    // the client's side of the first round, with its cause (opentelemetry-otlp says only
    // "network error")
    let said = lines.lines();
    assert!(
        said.iter()
            .any(|l| l.contains("cannot export traces") && l.contains("UnknownIssuer")),
        "{said:?}"
    );
}

/// OTLP/gRPC to an endpoint without a scheme (`127.0.0.1:<port>`: https, as the specification
/// has it without `OTEL_EXPORTER_OTLP_INSECURE=true`), a receiver behind tonic's TLS that asks
/// for a client certificate; from a current-thread runtime.
pub async fn otlp_grpc_over_tls_with_a_client_certificate() {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let pki = Pki::new();
    let sink = GrpcSink::default();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server_pem, &pki.server_key_pem))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let addr = grpc_receiver_with(&sink, move |server| server.tls_config(tls).unwrap());
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", addr.to_string());
    one_request_with_every_certificate(
        &pki,
        &format!("traces: otlp (grpc) https://{addr} (tls: the given roots, a client certificate)"),
    )
    .await;
    let got = sink.got.lock().unwrap().clone();
    for signal in ["traces", "metrics", "logs"] {
        assert!(
            got.iter().any(|(s, _)| *s == signal),
            "no {signal}: {got:?}"
        );
    }
}

/// Set up with the authority and the client certificate (general variables), the start-up line
/// saying `summary`; one request; the shutdown, in time.
async fn one_request_with_every_certificate(pki: &Pki, summary: &str) {
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "60000");
    pki.set_env("", true, true);
    let guard = Setup::new()
        .with_shutdown_timeout(Duration::from_secs(8))
        .install()
        .expect("init");
    says(&guard, summary);
    one_request().await;
    assert!(guard.shutdown(), "the flush finished in time");
}
