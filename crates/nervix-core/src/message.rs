//! Messages between agents and the channels they talk in, parsed from what a client sends.
//!
//! The server never reads a message: `payload` and `nonce` are bytes it stores and relays as
//! they came (base64 on the wire). What it checks is their shape: the payload's size, the
//! nonce's length (24 bytes, XSalsa20's), and that a message goes to exactly one agent or
//! one channel.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use uuid::Uuid;

use crate::{FieldError, FieldErrors};

/// Largest payload, decoded: 24 KiB, which is exactly 32 KiB of base64 text (a multiple of 3
/// bytes has no padding, so the limit reads the same in both units).
pub const MAX_PAYLOAD_BYTES: usize = 24 * 1024;
/// Largest payload as base64 text.
pub const MAX_PAYLOAD_CHARS: usize = MAX_PAYLOAD_BYTES / 3 * 4;
/// Length of a `crypto_box` nonce (XSalsa20).
pub const NONCE_BYTES: usize = 24;
/// Longest recipient reference: a handle is at most 64 characters, and every spelling of a
/// UUID that `Uuid::parse_str` reads is shorter.
pub const MAX_RECIPIENT_CHARS: usize = 64;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageTarget {
    /// One agent, by UUID or handle as the client wrote it (resolved against storage later).
    Agent(String),
    /// A channel the sender is a member of.
    Channel(Uuid),
}

/// A message as a client asked to send it, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage {
    pub target: MessageTarget,
    /// Whether `payload` is a `crypto_box` (a direct message then needs the recipient's
    /// `encryption_public_key`). The server cannot tell and does not try.
    pub encrypted: bool,
    /// 1 to [`MAX_PAYLOAD_BYTES`] bytes.
    pub payload: Vec<u8>,
    /// Required when `encrypted`; optional otherwise.
    pub nonce: Option<[u8; NONCE_BYTES]>,
}

/// The fields of a send request as they arrive (`POST /v1/messages/send`, or the `message.send`
/// frame), before parsing.
#[derive(Debug, Clone, Copy)]
pub struct SendMessageInput<'a> {
    pub to: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub encrypted: bool,
    pub payload: &'a str,
    pub nonce: Option<&'a str>,
}

impl SendMessage {
    /// Checks every field and reports every broken rule, each naming its wire field.
    pub fn parse(input: &SendMessageInput<'_>) -> Result<SendMessage, FieldErrors> {
        let mut errs = FieldErrors::default();
        let target = match (input.to, input.channel) {
            (Some(_), Some(_)) => {
                errs.push("channel", "give either `to` or `channel`, not both");
                None
            }
            (None, None) => {
                errs.push("to", "give `to` (an agent) or `channel`");
                None
            }
            (Some(to), None) => errs.check(parse_recipient(to)).map(MessageTarget::Agent),
            (None, Some(ch)) => errs
                .check(parse_uuid("channel", ch))
                .map(MessageTarget::Channel),
        };
        let payload = errs.check(parse_payload(input.payload));
        let nonce = match input.nonce {
            Some(n) => errs.check(parse_nonce(n)).map(Some),
            None if input.encrypted => {
                errs.push("nonce", "an encrypted message needs its 24-byte nonce");
                None
            }
            None => Some(None),
        };
        errs.into_result()?;
        match (target, payload, nonce) {
            (Some(target), Some(payload), Some(nonce)) => Ok(SendMessage {
                target,
                encrypted: input.encrypted,
                payload,
                nonce,
            }),
            // Every `None` above recorded an error, so `into_result` returned already.
            _ => Err(FieldErrors::from(FieldError::new(
                "body",
                "invalid message",
            ))),
        }
    }

    /// A canonical text of the request, for telling a retry (same text) from another request
    /// under the same `Idempotency-Key`: the same message however its JSON was spelled.
    pub fn canonical(&self) -> String {
        let target = match &self.target {
            MessageTarget::Agent(a) => serde_json::json!({ "to": a }),
            MessageTarget::Channel(c) => serde_json::json!({ "channel": c }),
        };
        serde_json::json!({
            "target": target,
            "encrypted": self.encrypted,
            "payload": STANDARD.encode(&self.payload),
            "nonce": self.nonce.map(|n| STANDARD.encode(n)),
        })
        .to_string()
    }
}

/// An agent named as a recipient or member: a UUID or a handle, 1–64 characters. Whether such
/// an agent exists is storage's question.
pub fn parse_recipient(s: &str) -> Result<String, FieldError> {
    let n = s.chars().count();
    if n == 0 || n > MAX_RECIPIENT_CHARS {
        return Err(FieldError::new(
            "to",
            "must be an agent's UUID or handle (1 to 64 characters)",
        ));
    }
    Ok(s.to_owned())
}

fn parse_uuid(field: &str, s: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(s.trim()).map_err(|_| FieldError::new(field, "must be a UUID"))
}

/// The payload: standard padded base64 exactly as encoded (no whitespace), 1 to
/// [`MAX_PAYLOAD_BYTES`] bytes decoded.
pub fn parse_payload(b64: &str) -> Result<Vec<u8>, FieldError> {
    if b64.len() > MAX_PAYLOAD_CHARS {
        return Err(FieldError::new(
            "payload",
            format!("must be at most {MAX_PAYLOAD_BYTES} bytes (base64: {MAX_PAYLOAD_CHARS} characters)"),
        ));
    }
    let bytes = STANDARD.decode(b64).map_err(|_| {
        FieldError::new(
            "payload",
            "must be base64 (standard alphabet, padded, no whitespace)",
        )
    })?;
    if bytes.is_empty() {
        return Err(FieldError::new("payload", "must not be empty"));
    }
    Ok(bytes)
}

/// A `crypto_box` nonce: 24 bytes, standard padded base64 (surrounding whitespace ignored, as
/// for keys).
pub fn parse_nonce(b64: &str) -> Result<[u8; NONCE_BYTES], FieldError> {
    STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| <[u8; NONCE_BYTES]>::try_from(b).ok())
        .ok_or_else(|| {
            FieldError::new(
                "nonce",
                "must be 24 bytes, base64 (standard alphabet, padded)",
            )
        })
}

/// A channel's name: 1–64 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelName(String);

impl ChannelName {
    pub const FIELD: &'static str = "name";
    pub const MAX_CHARS: usize = 64;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let n = s.trim();
        if n.is_empty() || n.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(Self::FIELD, "must be 1 to 64 characters"));
        }
        if n.chars().any(char::is_control) {
            return Err(FieldError::new(
                Self::FIELD,
                "must not contain control characters",
            ));
        }
        Ok(ChannelName(n.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The agents a request adds to a channel, by UUID or handle: at most [`Members::MAX`] per
/// request, duplicates dropped (first spelling kept, with its place in the request so that an
/// error can name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members(Vec<(usize, String)>);

impl Members {
    pub const FIELD: &'static str = "members";
    /// Members one request may name.
    pub const MAX: usize = 100;
    /// Members a channel may have at once: every message to it is delivered to each of them.
    pub const MAX_PER_CHANNEL: i64 = 1000;

    /// `required`: the list must name at least one agent (adding members; a new channel may
    /// start with its creator alone).
    pub fn parse(list: &[String], required: bool) -> Result<Self, FieldErrors> {
        let mut errs = FieldErrors::default();
        if list.len() > Self::MAX {
            errs.push(Self::FIELD, "at most 100 members per request");
            return Err(errs);
        }
        if required && list.is_empty() {
            errs.push(Self::FIELD, "name at least one agent");
            return Err(errs);
        }
        let mut out: Vec<(usize, String)> = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            match parse_recipient(m) {
                Ok(m) if !out.iter().any(|(_, seen)| *seen == m) => out.push((i, m)),
                Ok(_) => {}
                Err(e) => errs.push(Self::field(i), e.message),
            }
        }
        errs.into_result()?;
        Ok(Members(out))
    }

    /// The wire name of the `i`th entry of the request's list.
    pub fn field(i: usize) -> String {
        format!("members[{i}]")
    }

    /// Each distinct agent named, with its index in the request's list.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &str)> {
        self.0.iter().map(|(i, m)| (*i, m.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(to: Option<&'a str>, channel: Option<&'a str>) -> SendMessageInput<'a> {
        SendMessageInput {
            to,
            channel,
            encrypted: true,
            payload: "aGVsbG8=",
            nonce: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        }
    }

    fn fields(e: FieldErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn exactly_one_target() {
        let ok = SendMessage::parse(&input(Some("bob"), None)).unwrap();
        assert_eq!(ok.target, MessageTarget::Agent("bob".into()));
        assert_eq!(ok.payload, b"hello");
        assert_eq!(ok.nonce, Some([0u8; 24]));
        let ch = Uuid::now_v7();
        let ok = SendMessage::parse(&input(None, Some(&ch.to_string()))).unwrap();
        assert_eq!(ok.target, MessageTarget::Channel(ch));
        let both = SendMessage::parse(&input(Some("bob"), Some(&ch.to_string())));
        assert_eq!(fields(both.unwrap_err()), ["channel"]);
        assert_eq!(
            fields(SendMessage::parse(&input(None, None)).unwrap_err()),
            ["to"]
        );
        assert_eq!(
            fields(SendMessage::parse(&input(None, Some("nope"))).unwrap_err()),
            ["channel"]
        );
        assert_eq!(
            fields(SendMessage::parse(&input(Some(""), None)).unwrap_err()),
            ["to"]
        );
        let long = "x".repeat(65);
        assert_eq!(
            fields(SendMessage::parse(&input(Some(&long), None)).unwrap_err()),
            ["to"]
        );
    }

    #[test]
    fn payload_and_nonce() {
        let mut i = input(Some("bob"), None);
        for bad in [
            "",
            "not base64!",
            "aGVsbG8",
            " aGVsbG8=",
            "aGVsbG9=",
            "aGVs\nbG8=",
        ] {
            i.payload = bad;
            assert_eq!(
                fields(SendMessage::parse(&i).unwrap_err()),
                ["payload"],
                "{bad:?}"
            );
        }
        let max = STANDARD.encode(vec![7u8; MAX_PAYLOAD_BYTES]);
        assert_eq!(max.len(), MAX_PAYLOAD_CHARS);
        i.payload = &max;
        assert_eq!(
            SendMessage::parse(&i).unwrap().payload.len(),
            MAX_PAYLOAD_BYTES
        );
        let over = STANDARD.encode(vec![7u8; MAX_PAYLOAD_BYTES + 1]);
        i.payload = &over;
        assert_eq!(fields(SendMessage::parse(&i).unwrap_err()), ["payload"]);

        let bad_nonces = [
            STANDARD.encode([1u8; 23]),
            STANDARD.encode([1u8; 25]),
            "%%%".to_owned(),
        ];
        let mut i = input(Some("bob"), None);
        for bad in &bad_nonces {
            i.nonce = Some(bad);
            assert_eq!(fields(SendMessage::parse(&i).unwrap_err()), ["nonce"]);
        }
        i.nonce = None;
        assert_eq!(fields(SendMessage::parse(&i).unwrap_err()), ["nonce"]);
        i.encrypted = false;
        assert_eq!(SendMessage::parse(&i).unwrap().nonce, None);
    }

    #[test]
    fn every_broken_field_is_named() {
        let i = SendMessageInput {
            to: Some("a"),
            channel: Some("b"),
            encrypted: true,
            payload: "!",
            nonce: None,
        };
        assert_eq!(
            fields(SendMessage::parse(&i).unwrap_err()),
            ["channel", "payload", "nonce"]
        );
    }

    #[test]
    fn canonical_text_ignores_spelling() {
        let a = SendMessage::parse(&SendMessageInput {
            nonce: Some(" AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"),
            ..input(Some("bob"), None)
        })
        .unwrap();
        let b = SendMessage::parse(&input(Some("bob"), None)).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        let c = SendMessage::parse(&input(Some("carol"), None)).unwrap();
        assert_ne!(a.canonical(), c.canonical());
    }

    #[test]
    fn channel_names_and_members() {
        assert_eq!(ChannelName::parse("  ops  ").unwrap().as_str(), "ops");
        assert!(ChannelName::parse(" ").is_err());
        assert!(ChannelName::parse(&"é".repeat(64)).is_ok());
        assert!(ChannelName::parse(&"é".repeat(65)).is_err());
        assert!(ChannelName::parse("a\u{7}b").is_err());

        let list = vec!["bob".to_owned(), "bob".to_owned(), "carol".to_owned()];
        assert_eq!(
            Members::parse(&list, true)
                .unwrap()
                .entries()
                .collect::<Vec<_>>(),
            [(0, "bob"), (2, "carol")]
        );
        assert!(Members::parse(&[], false).unwrap().is_empty());
        assert_eq!(fields(Members::parse(&[], true).unwrap_err()), ["members"]);
        let bad = vec!["ok".to_owned(), String::new()];
        assert_eq!(
            fields(Members::parse(&bad, false).unwrap_err()),
            ["members[1]"]
        );
        let many: Vec<String> = (0..101).map(|i| format!("a{i}")).collect();
        assert_eq!(
            fields(Members::parse(&many, false).unwrap_err()),
            ["members"]
        );
    }
}
