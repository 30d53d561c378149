//! The body of a message send, shared by `POST /v1/messages/send` and the WebSocket
//! `message.send` frame (whose `data` is the same body).

use nervix_core::message::{SendMessage, SendMessageInput};
use nervix_core::FieldErrors;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::openapi;

/// A message to send, as it arrives: exactly one of `to` and `channel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageBody {
    /// The recipient: an agent's UUID or handle.
    #[serde(default)]
    pub to: Option<String>,
    /// A channel the sender is a member of.
    #[serde(default)]
    pub channel: Option<String>,
    /// Whether `payload` is a NaCl `crypto_box` (then `nonce` is required, and a direct
    /// message's recipient must have an `encryption_public_key`).
    pub encrypted: bool,
    /// Standard padded base64, stored and relayed as sent.
    pub payload: String,
    #[serde(default)]
    pub nonce: Option<String>,
}

impl SendMessageBody {
    /// The send request in core types; every broken rule names its field.
    pub fn parse(&self) -> Result<SendMessage, FieldErrors> {
        SendMessage::parse(&SendMessageInput {
            to: self.to.as_deref(),
            channel: self.channel.as_deref(),
            encrypted: self.encrypted,
            payload: &self.payload,
            nonce: self.nonce.as_deref(),
        })
    }
}

impl utoipa::PartialSchema for SendMessageBody {
    /// Four disjoint shapes, one per target (`to` or `channel`) and per `encrypted` (an
    /// encrypted message needs its `nonce`), so that the document states every rule of the
    /// body and a generator can build each shape on its own.
    fn schema() -> RefOr<Schema> {
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let mut one_of = OneOfBuilder::new().description(Some(
            "A message to one agent (`to`) or to a channel (`channel`), not both. `payload` is \
             stored and relayed as sent; the server never decrypts it.",
        ));
        for direct in [true, false] {
            for encrypted in [true, false] {
                let (to, channel): (RefOr<Schema>, RefOr<Schema>) = if direct {
                    (openapi::recipient().into(), null().into())
                } else {
                    (null().into(), openapi::channel_id().into())
                };
                let nonce: RefOr<Schema> = if encrypted {
                    openapi::nonce().into()
                } else {
                    openapi::nullable_nonce().into()
                };
                let mut shape = ObjectBuilder::new()
                    .title(Some(format!(
                        "{} message, {}",
                        if direct { "direct" } else { "channel" },
                        if encrypted {
                            "encrypted"
                        } else {
                            "not encrypted"
                        }
                    )))
                    .property("to", to)
                    .property("channel", channel)
                    .property(
                        "encrypted",
                        ObjectBuilder::new()
                            .schema_type(Type::Boolean)
                            .enum_values(Some([encrypted])),
                    )
                    .required("encrypted")
                    .property("payload", openapi::payload())
                    .required("payload")
                    .property("nonce", nonce)
                    .required(if direct { "to" } else { "channel" });
                if encrypted {
                    shape = shape.required("nonce");
                }
                one_of = one_of.item(shape);
            }
        }
        RefOr::T(Schema::OneOf(one_of.build()))
    }
}

impl ToSchema for SendMessageBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "SendMessage".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's shapes accept exactly what the parser accepts, on a sample of bodies.
    #[test]
    fn the_schema_agrees_with_the_parser() {
        let schema = serde_json::to_value(<SendMessageBody as utoipa::PartialSchema>::schema())
            .expect("schema");
        let validator = jsonschema::validator_for(&schema).expect("valid schema");
        let ch = "0190c3a5-6f3b-7c41-9d6e-0123456789ab";
        let nonce = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let b64 = |n: usize| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(vec![0xabu8; n])
        };
        let max = b64(nervix_core::message::MAX_PAYLOAD_BYTES);
        let over = b64(nervix_core::message::MAX_PAYLOAD_BYTES + 1);
        let samples = [
            serde_json::json!({"to": "bob", "encrypted": true, "payload": "aGk=", "nonce": nonce}),
            serde_json::json!({"to": "bob", "channel": null, "encrypted": false, "payload": "aGk="}),
            serde_json::json!({"channel": ch, "encrypted": false, "payload": "aGk=", "nonce": null}),
            serde_json::json!({"channel": ch, "to": null, "encrypted": true, "payload": "aGk=", "nonce": nonce}),
            serde_json::json!({"to": "bob", "channel": ch, "encrypted": false, "payload": "aGk="}),
            serde_json::json!({"encrypted": false, "payload": "aGk="}),
            serde_json::json!({"to": "bob", "encrypted": true, "payload": "aGk="}),
            serde_json::json!({"to": "bob", "encrypted": true, "payload": "aGk=", "nonce": "AAAA"}),
            serde_json::json!({"to": "", "encrypted": false, "payload": "aGk="}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": ""}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": "aGk"}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": "aGl="}),
            serde_json::json!({"channel": "nope", "encrypted": false, "payload": "aGk="}),
            serde_json::json!({"channel": format!(" {ch} "), "encrypted": false, "payload": "aGk="}),
            serde_json::json!({"to": "x".repeat(65), "encrypted": false, "payload": "aGk="}),
            serde_json::json!({"to": "é".repeat(64), "encrypted": false, "payload": "aA=="}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": "aB=="}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": "aGlp"}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": max}),
            serde_json::json!({"to": "bob", "encrypted": false, "payload": over}),
        ];
        for body in samples {
            let parsed = serde_json::from_value::<SendMessageBody>(body.clone())
                .ok()
                .map(|b| b.parse());
            let accepted = matches!(parsed, Some(Ok(_)));
            let why: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert_eq!(validator.is_valid(&body), accepted, "{body}: {why:?}");
        }
    }
}
