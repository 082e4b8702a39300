//! `valv kek …`: the local (`file://`) key provider's lifecycle from the command line:
//! create a key, add a version, disable or enable a version, show every version.
//!
//! These are the operations an operator performs on a vault key in the vault itself;
//! for a local key the files are the vault. Each runs synchronously (RSA key
//! generation takes a moment) and prints the result on stdout.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use kms_client::local;
use kms_client::{KeyDescription, KeyId, KeyIdKind, VersionedKeyId};

use crate::cli::KekCommand;

/// Runs one `valv kek` subcommand, writing its output to `out`.
///
/// Fails with a message naming the key and what is wrong (an unparsable or
/// non-`file://` id, a missing key or version, an unsupported size, a key that
/// already exists).
pub fn run(command: &KekCommand, out: &mut impl Write) -> Result<(), String> {
    let now = Utc::now();
    match command {
        KekCommand::Create { key_id, bits } => {
            let key = file_key(key_id)?;
            if key.version().is_some() {
                return Err(format!(
                    "{key_id}: give the key without a version; create makes the first version"
                ));
            }
            let KeyIdKind::File { dir, name } = key.kind() else {
                unreachable!("file_key checked the kind");
            };
            let version = local::create_key(dir, name, *bits).map_err(|e| e.to_string())?;
            writeln!(out, "created {version}").map_err(io)?;
        }
        KekCommand::AddVersion { key_id, bits } => {
            let key = file_key(key_id)?;
            let version = local::add_version(&key, *bits).map_err(|e| e.to_string())?;
            writeln!(out, "added {version}").map_err(io)?;
        }
        KekCommand::Disable { version_id } => {
            let id = versioned(version_id)?;
            local::set_enabled(&id, false).map_err(|e| e.to_string())?;
            writeln!(out, "disabled {id}").map_err(io)?;
        }
        KekCommand::Enable { version_id } => {
            let id = versioned(version_id)?;
            local::set_enabled(&id, true).map_err(|e| e.to_string())?;
            writeln!(out, "enabled {id}").map_err(io)?;
        }
        KekCommand::Show { key_id, json } => {
            let key = file_key(key_id)?;
            let versions = local::describe_versions(&key).map_err(|e| e.to_string())?;
            let current = current_version(&versions, now);
            if *json {
                let value = show_json(&key.versionless(), &versions, current, now);
                let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
                writeln!(out, "{text}").map_err(io)?;
            } else {
                write_show_text(out, &key.versionless(), &versions, current, now).map_err(io)?;
            }
        }
    }
    Ok(())
}

fn io(e: std::io::Error) -> String {
    format!("cannot write the output: {e}")
}

/// Parses a `file://` key id.
fn file_key(text: &str) -> Result<KeyId, String> {
    let key: KeyId = text
        .parse()
        .map_err(|e: kms_client::KmsError| e.to_string())?;
    match key.kind() {
        KeyIdKind::File { .. } => Ok(key),
        KeyIdKind::AzureKeyVault { .. } => Err(format!(
            "{text}: `valv kek` manages local file:// keys; manage a Key Vault key in the vault"
        )),
    }
}

/// Parses a `file://` key id that names a version.
fn versioned(text: &str) -> Result<VersionedKeyId, String> {
    file_key(text)?.as_versioned().ok_or_else(|| {
        format!(
            "{text}: name the version (file:///<dir>/<name>/<version>); `valv kek show` lists them"
        )
    })
}

/// The version a versionless id resolves to: the newest usable one.
fn current_version(versions: &[KeyDescription], now: DateTime<Utc>) -> Option<&VersionedKeyId> {
    versions
        .iter()
        .rev()
        .find(|v| v.usable_at(now))
        .map(|v| &v.id)
}

fn state(v: &KeyDescription, now: DateTime<Utc>) -> &'static str {
    if !v.enabled {
        "disabled"
    } else if v.expires.is_some_and(|e| now >= e) {
        "expired"
    } else if v.not_before.is_some_and(|n| now < n) {
        "not-yet-valid"
    } else {
        "enabled"
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn write_show_text(
    out: &mut impl Write,
    key: &KeyId,
    versions: &[KeyDescription],
    current: Option<&VersionedKeyId>,
    now: DateTime<Utc>,
) -> std::io::Result<()> {
    writeln!(out, "key      {key}")?;
    match current {
        Some(c) => writeln!(out, "current  {c}")?,
        None => writeln!(
            out,
            "current  none: no enabled, unexpired version (the key is revoked)"
        )?,
    }
    writeln!(out, "versions {}", versions.len())?;
    let row = |mark: &str, cells: [&str; 6]| {
        let [version, state, bits, created, expires, not_before] = cells;
        let line = format!(
            "{mark} {version:<32}  {state:<13}  {bits:>4}  {created:<20}  {expires:<20}  {not_before}"
        );
        line.trim_end().to_owned()
    };
    writeln!(
        out,
        "{}",
        row(
            " ",
            [
                "version",
                "state",
                "bits",
                "created",
                "expires",
                "not-before"
            ]
        )
    )?;
    for v in versions {
        let mark = if Some(&v.id) == current { "*" } else { " " };
        let bits = v.key_size_bits.to_string();
        let (created, expires, not_before) = (time(v.created), time(v.expires), time(v.not_before));
        let cells = [
            v.id.version(),
            state(v, now),
            &bits,
            &created,
            &expires,
            &not_before,
        ];
        writeln!(out, "{}", row(mark, cells))?;
    }
    Ok(())
}

fn show_json(
    key: &KeyId,
    versions: &[KeyDescription],
    current: Option<&VersionedKeyId>,
    now: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "keyIdentifier": key.to_string(),
        "currentVersionedKeyIdentifier": current.map(ToString::to_string),
        "versions": versions.iter().map(|v| serde_json::json!({
            "versionedKeyIdentifier": v.id.to_string(),
            "version": v.id.version(),
            "state": state(v, now),
            "keyType": v.key_type,
            "keySize": v.key_size_bits,
            "created": v.created.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "expires": v.expires.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "notBefore": v.not_before.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        })).collect::<Vec<_>>(),
    })
}
