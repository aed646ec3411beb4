//! NATS JetStream: the fleet-wide stream that `firehose export nats` fills and
//! `firehose query --nats` reads (docs/scale-out.md).
//!
//! One stream (default `FIREHOSE`) holds every host's records under
//! `firehose.<host>.<kind>`. A message is the record's `tail --json` line; its headers say
//! which history instance and which seq it carries, and `Nats-Msg-Id` is
//! `<instance>:<seq>`, so JetStream drops a resend.

pub(crate) mod export;
pub(crate) mod fleet;
pub(crate) mod install;

use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream::{self, stream};

/// The header that names the history instance a message comes from (32 hex digits).
pub(crate) const INSTANCE_HEADER: &str = "Firehose-Instance";
/// The header that says the last seq a message covers: a record's own seq, a notice's `to`.
pub(crate) const SEQ_HEADER: &str = "Firehose-Seq";
/// How long JetStream remembers a message id. It must be longer than any stretch over
/// which the exporter may send a message again: its longest retry backoff (5 s) plus the
/// ack timeout, many times over.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The subjects the stream must take.
pub(crate) const SUBJECTS: &str = "firehose.>";

/// The arguments every NATS command shares.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Server {
    /// The NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub(crate) url: String,
    /// The JetStream stream.
    #[arg(long, value_name = "NAME", default_value = "FIREHOSE")]
    pub(crate) stream: String,
}

/// A host name as one subject token: letters, digits, `-` and `_` kept, anything else
/// (dots, spaces, wildcards) made `_`.
pub(crate) fn host_token(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// A `--host` given by the user: it must already be a subject token.
pub(crate) fn checked_host(h: &str) -> anyhow::Result<String> {
    if h.is_empty() || host_token(h) != h {
        bail!("--host {h:?} is not a valid host name here: use letters, digits, - and _ only");
    }
    Ok(h.to_string())
}

/// This machine's host name, as a subject token.
pub(crate) fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name = name.trim();
    // A fully qualified name keeps its first label: `db1.example.com` is `db1`.
    host_token(name.split('.').next().unwrap_or(""))
}

/// Connects to the server (waiting for it if it is not up yet when `wait` is set).
pub(crate) async fn connect(
    url: &str,
    name: &str,
    wait: bool,
) -> anyhow::Result<jetstream::Context> {
    let opts = || {
        async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
    };
    let client = match opts().connect(url).await {
        Ok(c) => c,
        Err(e) if wait => {
            // Say so once, then wait: a unit may start before the server.
            eprintln!("firehose: the NATS server at {url} is not up yet ({e}); waiting for it");
            opts()
                .retry_on_initial_connect()
                .connect(url)
                .await
                .with_context(|| format!("cannot reach the NATS server at {url}"))?
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot reach the NATS server at {url} (is it running?)"
            )))
        }
    };
    Ok(jetstream::new(client))
}

/// What the stream must be for the exporter's guarantees: it takes `firehose.>`, keeps
/// messages on disk, and remembers ids at least [`DUPLICATE_WINDOW`].
pub(crate) fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![SUBJECTS.to_string()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("Firehose file events from every host".into()),
        ..Default::default()
    }
}

/// Why an existing stream's settings cannot carry the export (empty: they can).
pub(crate) fn config_problems(have: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    if !have.subjects.iter().any(|s| s == SUBJECTS || s == ">") {
        out.push(format!(
            "its subjects are {:?}, not {SUBJECTS:?}",
            have.subjects
        ));
    }
    if have.storage != stream::StorageType::File {
        out.push(format!(
            "it keeps messages in {:?} storage, not on disk (file)",
            have.storage
        ));
    }
    if have.duplicate_window < DUPLICATE_WINDOW {
        out.push(format!(
            "its duplicate window is {} s, under the {} s a resend needs",
            have.duplicate_window.as_secs(),
            DUPLICATE_WINDOW.as_secs()
        ));
    }
    if have.sealed {
        out.push("it is sealed".into());
    }
    out
}

/// The stream, made if it is missing; an existing one with other settings is an error that
/// says which settings.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<stream::Stream> {
    match js.get_stream(name).await {
        Ok(mut s) => {
            let info = s.info().await.context("reading the stream's settings")?;
            let problems = config_problems(&info.config);
            if !problems.is_empty() {
                bail!(
                    "the JetStream stream {name} already exists with other settings: {}; \
                     delete it (nats stream rm {name}) or pick another with --stream",
                    problems.join("; ")
                );
            }
            Ok(s)
        }
        Err(e) if is_not_found(&e) => js
            .create_stream(stream_config(name))
            .await
            .with_context(|| format!("creating the JetStream stream {name}")),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "looking up the JetStream stream {name} (is JetStream on? nats-server -js)"
        ))),
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Reads what an ordered consumer with `config` finds on `stream` now, message by message,
/// until none is pending or `each` says stop (returns false). A server silent for `wait`
/// is an error.
pub(crate) async fn read_ordered(
    stream: &stream::Stream,
    config: jetstream::consumer::pull::OrderedConfig,
    wait: Duration,
    mut each: impl FnMut(&jetstream::Message) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut c = stream
        .create_consumer(config)
        .await
        .context("making a consumer on the stream")?;
    if c.info().await.context("asking the consumer")?.num_pending == 0 {
        return Ok(());
    }
    let mut msgs = c.messages().await.context("reading the stream")?;
    loop {
        let m = tokio::time::timeout(wait, msgs.next())
            .await
            .with_context(|| format!("the NATS server sent nothing for {} s", wait.as_secs()))?
            .context("the stream ended")?
            .map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
        let pending = m
            .info()
            .map_err(|e| anyhow::anyhow!("a message without its stream info: {e}"))?
            .pending;
        if !each(&m)? || pending == 0 {
            return Ok(());
        }
    }
}

/// A history instance id from its 32 hex digits.
pub(crate) fn parse_instance(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A tokio runtime on this thread for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_one_subject_token() {
        assert_eq!(host_token("db-1_a"), "db-1_a");
        assert_eq!(host_token("a.b c*>"), "a_b_c__");
        assert_eq!(host_token(""), "_");
        assert!(checked_host("web.1").is_err());
        assert!(checked_host("").is_err());
        assert_eq!(checked_host("web-1").unwrap(), "web-1");
    }

    #[test]
    fn instances_parse_from_hex() {
        let id = [0xab; 16];
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_instance(&hex), Some(id));
        assert_eq!(parse_instance("ab"), None);
        assert_eq!(parse_instance(&"zz".repeat(16)), None);
    }

    #[test]
    fn a_stream_with_other_settings_is_refused_with_each_reason() {
        assert!(config_problems(&stream_config("S")).is_empty());
        let mut c = stream_config("S");
        c.subjects = vec!["other.>".into()];
        c.storage = stream::StorageType::Memory;
        c.duplicate_window = Duration::from_secs(10);
        let p = config_problems(&c);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("other.>"));
        assert!(p[2].contains("10 s"));
    }
}
