//! Reloading the listener's certificate without a restart: on SIGHUP, and when the
//! files' contents change (polled every `server.tls.reload_interval_secs`).
//!
//! Each attempt reads every file and builds a whole new configuration
//! ([`super::build`]); only a configuration that builds replaces the one in use, so a
//! missing, unparsable or half-written file, or a key that is not the certificate's,
//! is logged as an error and the old certificate keeps serving. The poll compares a
//! digest of the contents (not modification times, which a copy can preserve and a
//! coarse clock can repeat), and tries a given set of contents once: a bad replacement
//! is reported once, and retried when any file changes again. Replacing the
//! certificate and key as two renames can therefore log one mismatch between them;
//! the second rename then loads.

use std::sync::Arc;
use std::time::Duration;

use super::{build, Loaded, ServerTls, Sources, TlsError, TlsFiles};

/// What one look at the files did.
#[derive(Debug)]
pub enum Outcome {
    /// The contents are those last tried (loaded or refused): nothing to do.
    Unchanged,
    /// A new configuration is in use.
    Reloaded(Box<Loaded>),
    /// The files could not be read or did not build; the configuration in use stays.
    Refused(TlsError),
}

/// Watches the files and replaces the live configuration.
#[derive(Debug)]
pub struct Reloader {
    files: TlsFiles,
    tls: Arc<ServerTls>,
    /// The digest of the contents last tried; `None` before the first look or after a
    /// read failure.
    last_tried: Option<[u8; 32]>,
    /// The last read failure's message, so a missing file is logged once, not per poll.
    last_read_error: Option<String>,
}

impl Reloader {
    /// A reloader for `tls`, whose configuration was built from `files` with contents of
    /// digest `loaded` (the start-up load).
    pub fn new(files: TlsFiles, tls: Arc<ServerTls>, loaded: [u8; 32]) -> Reloader {
        Reloader {
            files,
            tls,
            last_tried: Some(loaded),
            last_read_error: None,
        }
    }

    /// Reads the files and, if their contents changed since the last attempt (or
    /// `force`), builds and installs a new configuration.
    pub fn check(&mut self, force: bool) -> Outcome {
        let sources = match Sources::read(&self.files) {
            Ok(s) => s,
            Err(e) => {
                self.last_tried = None;
                return Outcome::Refused(e);
            }
        };
        self.last_read_error = None;
        let digest = sources.digest();
        if !force && self.last_tried == Some(digest) {
            return Outcome::Unchanged;
        }
        self.last_tried = Some(digest);
        match build(&self.files, &sources) {
            Ok(loaded) => {
                self.tls.replace(loaded.config.clone());
                Outcome::Reloaded(Box::new(loaded))
            }
            Err(e) => Outcome::Refused(e),
        }
    }

    /// [`Reloader::check`], logged: a reload at info with the new certificate's
    /// subject, serial, expiry and fingerprint; a refusal at error (a read failure once
    /// until it changes).
    pub fn check_and_log(&mut self, force: bool, why: &'static str) {
        match self.check(force) {
            Outcome::Unchanged => {}
            Outcome::Reloaded(loaded) => {
                let c = &loaded.cert;
                tracing::info!(
                    trigger = why,
                    cert_file = %self.files.cert.display(),
                    subject = %c.subject,
                    serial = %c.serial,
                    not_after = %c.not_after,
                    sha256 = %c.sha256,
                    "TLS certificate reloaded: new handshakes use it"
                );
            }
            Outcome::Refused(e) => {
                let read_error = matches!(e, TlsError::Read { .. }).then(|| e.to_string());
                if read_error.is_some() && !force && read_error == self.last_read_error {
                    return;
                }
                self.last_read_error = read_error;
                tracing::error!(
                    trigger = why,
                    error = %e,
                    "TLS certificate NOT reloaded: the certificate in use keeps serving"
                );
            }
        }
    }

    /// Checks every `interval` (never, if `None`) and on every SIGHUP, until the task is
    /// dropped. `hup` is the SIGHUP stream, installed by the caller before the listener
    /// is announced so that no early signal takes the default action (exit).
    pub async fn run(
        mut self,
        interval: Option<Duration>,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) {
        let mut ticks = interval.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let tick = async {
                match ticks.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let signal = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick => self.check_and_log(false, "files changed"),
                got = signal => match got {
                    Some(()) => self.check_and_log(true, "SIGHUP"),
                    // The signal stream cannot end while the runtime runs; stop
                    // listening to it rather than spin.
                    None => hup = None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::load;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use std::path::Path;

    fn self_signed(cn: &str) -> (String, String) {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        (
            p.self_signed(&key).expect("sign").pem(),
            key.serialize_pem(),
        )
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn replaces_only_with_a_configuration_that_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        let (cert_a, key_a) = self_signed("a");
        let (cert_b, key_b) = self_signed("b");
        write(&files.cert, &cert_a);
        write(&files.key, &key_a);
        let loaded = load(&files).expect("load");
        let digest = Sources::read(&files).expect("read").digest();
        let tls = Arc::new(ServerTls::new(loaded.config.clone(), false));
        let mut r = Reloader::new(files.clone(), tls.clone(), digest);
        let serving = |want: &Arc<rustls::ServerConfig>| Arc::ptr_eq(&tls.current(), want);

        assert!(matches!(r.check(false), Outcome::Unchanged));
        assert!(serving(&loaded.config));

        // The new certificate with the old key: refused, once.
        write(&files.cert, &cert_b);
        assert!(matches!(
            r.check(false),
            Outcome::Refused(TlsError::KeyMismatch { .. })
        ));
        assert!(serving(&loaded.config), "the old configuration serves on");
        assert!(matches!(r.check(false), Outcome::Unchanged));

        // Its key arrives: reloaded.
        write(&files.key, &key_b);
        let Outcome::Reloaded(b) = r.check(false) else {
            panic!("expected a reload");
        };
        assert_eq!(b.cert.subject, "CN=b");
        assert!(serving(&b.config));

        // Garbage, then a missing file: refused, the configuration stays.
        write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n");
        assert!(matches!(r.check(false), Outcome::Refused(_)));
        std::fs::remove_file(&files.cert).expect("remove");
        assert!(matches!(
            r.check(false),
            Outcome::Refused(TlsError::Read { .. })
        ));
        assert!(serving(&b.config));

        // Back as it was: a forced check rebuilds even identical contents.
        write(&files.cert, &cert_b);
        let Outcome::Reloaded(again) = r.check(false) else {
            panic!("a file that reappears is tried again");
        };
        assert!(serving(&again.config));
        assert!(matches!(r.check(false), Outcome::Unchanged));
        assert!(matches!(r.check(true), Outcome::Reloaded(_)));
    }
}
