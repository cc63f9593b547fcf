//! TLS between nodes: each node presents its certificate and checks its
//! peer's against the cluster's CA, both ways (the cookie is then checked
//! inside the encrypted session).

use crate::config::cluster::ClusterTlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

pub struct Client {
    pub connector: tokio_rustls::TlsConnector,
}

impl Client {
    /// The name a peer's certificate must carry: the host of its address.
    pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned())
            .map_err(|e| format!("`{host}` is not a name a certificate can carry: {e}"))
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn load(tls: &ClusterTlsConfig) -> Result<(tokio_rustls::TlsAcceptor, Client), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&tls.ca_file)? {
        roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&tls.cert_file)?;
    let key = || PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| format!("{}: {e}", tls.key_file.display()));
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("ca_file: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key()?)
        .map_err(|e| format!("cert_file: {e}"))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key()?)
        .map_err(|e| format!("cert_file: {e}"))?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        Client { connector: tokio_rustls::TlsConnector::from(Arc::new(client)) },
    ))
}
