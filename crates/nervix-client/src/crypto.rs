//! End-to-end message encryption: NaCl `crypto_box` (X25519-XSalsa20-Poly1305).
//!
//! The output is byte-for-byte what libsodium's `crypto_box_easy` and tweetnacl's `nacl.box`
//! produce (16-byte Poly1305 tag followed by the ciphertext), so agents written against those
//! libraries can talk to agents using this SDK. The server never sees plaintext: it relays the
//! base64 `payload` and `nonce` as opaque strings.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey, KEY_SIZE};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::traits::IsIdentity;
use zeroize::Zeroizing;

/// Nonce length of XSalsa20.
pub const NONCE_SIZE: usize = 24;

/// An encrypted message ready for `POST /v1/messages/send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Base64 of the Poly1305 tag followed by the ciphertext (`crypto_box_easy` layout).
    pub payload_b64: String,
    /// Base64 of the 24-byte nonce.
    pub nonce_b64: String,
}

/// Why a message could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Not base64 of a 32-byte key.
    #[error("public key must be base64 of exactly {KEY_SIZE} bytes")]
    InvalidPublicKey,
    /// The peer's key is one of the few X25519 points that force an all-zero shared secret.
    /// libsodium refuses these too; accepting them would encrypt under a key anyone can compute.
    #[error("public key has low order and cannot be used for encryption")]
    WeakPublicKey,
    /// Not base64 of 24 bytes.
    #[error("nonce must be base64 of exactly {NONCE_SIZE} bytes")]
    InvalidNonce,
    /// The payload is not base64.
    #[error("payload is not valid base64")]
    InvalidPayload,
    /// Wrong keys, or the payload or nonce was altered in transit.
    #[error("message could not be authenticated")]
    Authentication,
    /// The cipher refused (cannot happen with valid keys).
    #[error("encryption failed")]
    Encryption,
}

/// Encrypts `plaintext` from `sender` to the holder of `recipient_pub_b64`, with a fresh random nonce.
pub fn seal(
    sender: &SecretKey,
    recipient_pub_b64: &str,
    plaintext: &[u8],
) -> Result<Sealed, CryptoError> {
    let recipient = decode_public_key(recipient_pub_b64)?;
    // 24 random bytes make a nonce collision negligible, so no counter state is needed.
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let payload = seal_with_nonce(sender, &recipient, &nonce, plaintext)?;
    Ok(Sealed {
        payload_b64: B64.encode(payload),
        nonce_b64: B64.encode(nonce),
    })
}

/// Decrypts and authenticates a message that `sender_pub_b64` sealed for `recipient`.
pub fn open(
    recipient: &SecretKey,
    sender_pub_b64: &str,
    payload_b64: &str,
    nonce_b64: &str,
) -> Result<Vec<u8>, CryptoError> {
    let sender = decode_public_key(sender_pub_b64)?;
    let nonce_bytes = B64
        .decode(nonce_b64)
        .map_err(|_| CryptoError::InvalidNonce)?;
    if nonce_bytes.len() != NONCE_SIZE {
        return Err(CryptoError::InvalidNonce);
    }
    let nonce = Nonce::clone_from_slice(&nonce_bytes);
    let payload = B64
        .decode(payload_b64)
        .map_err(|_| CryptoError::InvalidPayload)?;
    salsa_box(recipient, &sender)?
        .decrypt(&nonce, payload.as_slice())
        .map_err(|_| CryptoError::Authentication)
}

/// Parses a standard, padded base64 X25519 public key.
pub fn decode_public_key(b64: &str) -> Result<PublicKey, CryptoError> {
    let bytes = B64.decode(b64).map_err(|_| CryptoError::InvalidPublicKey)?;
    PublicKey::from_slice(&bytes).map_err(|_| CryptoError::InvalidPublicKey)
}

fn seal_with_nonce(
    sender: &SecretKey,
    recipient: &PublicKey,
    nonce: &Nonce,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    salsa_box(sender, recipient)?
        .encrypt(nonce, plaintext)
        .map_err(|_| CryptoError::Encryption)
}

fn salsa_box(own: &SecretKey, peer: &PublicKey) -> Result<SalsaBox, CryptoError> {
    // crypto_box does not check the shared point, so repeat libsodium's check: X25519 with a
    // clamped scalar (a multiple of the cofactor) yields zero exactly when the peer key has small
    // order. The extra scalar multiplication is negligible next to a network round trip.
    let secret = Zeroizing::new(own.to_bytes());
    let shared = Zeroizing::new(MontgomeryPoint(peer.to_bytes()).mul_clamped(*secret));
    if shared.is_identity() {
        return Err(CryptoError::WeakPublicKey);
    }
    Ok(SalsaBox::new(peer, own))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: [u8; 32]) -> SecretKey {
        SecretKey::from_bytes(bytes)
    }

    fn pub_b64(sk: &SecretKey) -> String {
        B64.encode(sk.public_key().as_bytes())
    }

    #[test]
    fn round_trip() {
        let alice = SecretKey::generate(&mut OsRng);
        let bob = SecretKey::generate(&mut OsRng);
        let sealed = seal(&alice, &pub_b64(&bob), b"meet at the usual place").unwrap();
        assert_eq!(B64.decode(&sealed.nonce_b64).unwrap().len(), NONCE_SIZE);
        let opened = open(
            &bob,
            &pub_b64(&alice),
            &sealed.payload_b64,
            &sealed.nonce_b64,
        )
        .unwrap();
        assert_eq!(opened, b"meet at the usual place");
    }

    #[test]
    fn nonces_are_fresh() {
        let alice = SecretKey::generate(&mut OsRng);
        let bob = pub_b64(&SecretKey::generate(&mut OsRng));
        let a = seal(&alice, &bob, b"same").unwrap();
        let b = seal(&alice, &bob, b"same").unwrap();
        assert_ne!(a.nonce_b64, b.nonce_b64);
        assert_ne!(a.payload_b64, b.payload_b64);
    }

    #[test]
    fn tampering_is_rejected() {
        let alice = SecretKey::generate(&mut OsRng);
        let bob = SecretKey::generate(&mut OsRng);
        let sealed = seal(&alice, &pub_b64(&bob), b"pay 10.00").unwrap();

        let mut payload = B64.decode(&sealed.payload_b64).unwrap();
        let last = payload.len() - 1;
        payload[last] ^= 1;
        let err = open(
            &bob,
            &pub_b64(&alice),
            &B64.encode(&payload),
            &sealed.nonce_b64,
        );
        assert!(matches!(err, Err(CryptoError::Authentication)));

        let mut nonce = B64.decode(&sealed.nonce_b64).unwrap();
        nonce[0] ^= 1;
        let err = open(
            &bob,
            &pub_b64(&alice),
            &sealed.payload_b64,
            &B64.encode(&nonce),
        );
        assert!(matches!(err, Err(CryptoError::Authentication)));

        let mallory = SecretKey::generate(&mut OsRng);
        let err = open(
            &bob,
            &pub_b64(&mallory),
            &sealed.payload_b64,
            &sealed.nonce_b64,
        );
        assert!(matches!(err, Err(CryptoError::Authentication)));
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let alice = SecretKey::generate(&mut OsRng);
        let short = B64.encode([7u8; 31]);
        assert!(matches!(
            seal(&alice, &short, b"x"),
            Err(CryptoError::InvalidPublicKey)
        ));
        assert!(matches!(
            seal(&alice, "not base64!", b"x"),
            Err(CryptoError::InvalidPublicKey)
        ));
        let alice_pub = pub_b64(&alice);
        let nonce23 = B64.encode([0u8; 23]);
        assert!(matches!(
            open(&alice, &alice_pub, "AAAA", &nonce23),
            Err(CryptoError::InvalidNonce)
        ));
        let nonce24 = B64.encode([0u8; 24]);
        assert!(matches!(
            open(&alice, &alice_pub, "%%%", &nonce24),
            Err(CryptoError::InvalidPayload)
        ));
        // Too short to even hold the tag.
        assert!(matches!(
            open(&alice, &alice_pub, "AAAA", &nonce24),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let alice = SecretKey::generate(&mut OsRng);
        // The zero point and a point of order 8 (from libsodium's test/default/box.c).
        let zero = [0u8; 32];
        let order8 = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        for point in [zero, order8] {
            let err = seal(&alice, &B64.encode(point), b"x");
            assert!(matches!(err, Err(CryptoError::WeakPublicKey)), "{err:?}");
        }
    }

    // Known-answer test: libsodium test/default/box.c and box.exp (the NaCl `box` vector with the
    // RFC 7748 key pairs). libsodium prints the output of `crypto_box` without its 16 leading zero
    // bytes, which is exactly the `crypto_box_easy` / tweetnacl layout: tag || ciphertext.
    const ALICE_SK: [u8; 32] = [
        0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66,
        0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9,
        0x2c, 0x2a,
    ];
    const ALICE_PK: [u8; 32] = [
        0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7,
        0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b,
        0x4e, 0x6a,
    ];
    const BOB_SK: [u8; 32] = [
        0x5d, 0xab, 0x08, 0x7e, 0x62, 0x4a, 0x8a, 0x4b, 0x79, 0xe1, 0x7f, 0x8b, 0x83, 0x80, 0x0e,
        0xe6, 0x6f, 0x3b, 0xb1, 0x29, 0x26, 0x18, 0xb6, 0xfd, 0x1c, 0x2f, 0x8b, 0x27, 0xff, 0x88,
        0xe0, 0xeb,
    ];
    const BOB_PK: [u8; 32] = [
        0xde, 0x9e, 0xdb, 0x7d, 0x7b, 0x7d, 0xc1, 0xb4, 0xd3, 0x5b, 0x61, 0xc2, 0xec, 0xe4, 0x35,
        0x37, 0x3f, 0x83, 0x43, 0xc8, 0x5b, 0x78, 0x67, 0x4d, 0xad, 0xfc, 0x7e, 0x14, 0x6f, 0x88,
        0x2b, 0x4f,
    ];
    const NONCE: [u8; 24] = [
        0x69, 0x69, 0x6e, 0xe9, 0x55, 0xb6, 0x2b, 0x73, 0xcd, 0x62, 0xbd, 0xa8, 0x75, 0xfc, 0x73,
        0xd6, 0x82, 0x19, 0xe0, 0x03, 0x6b, 0x7a, 0x0b, 0x37,
    ];
    const MESSAGE: [u8; 131] = [
        0xbe, 0x07, 0x5f, 0xc5, 0x3c, 0x81, 0xf2, 0xd5, 0xcf, 0x14, 0x13, 0x16, 0xeb, 0xeb, 0x0c,
        0x7b, 0x52, 0x28, 0xc5, 0x2a, 0x4c, 0x62, 0xcb, 0xd4, 0x4b, 0x66, 0x84, 0x9b, 0x64, 0x24,
        0x4f, 0xfc, 0xe5, 0xec, 0xba, 0xaf, 0x33, 0xbd, 0x75, 0x1a, 0x1a, 0xc7, 0x28, 0xd4, 0x5e,
        0x6c, 0x61, 0x29, 0x6c, 0xdc, 0x3c, 0x01, 0x23, 0x35, 0x61, 0xf4, 0x1d, 0xb6, 0x6c, 0xce,
        0x31, 0x4a, 0xdb, 0x31, 0x0e, 0x3b, 0xe8, 0x25, 0x0c, 0x46, 0xf0, 0x6d, 0xce, 0xea, 0x3a,
        0x7f, 0xa1, 0x34, 0x80, 0x57, 0xe2, 0xf6, 0x55, 0x6a, 0xd6, 0xb1, 0x31, 0x8a, 0x02, 0x4a,
        0x83, 0x8f, 0x21, 0xaf, 0x1f, 0xde, 0x04, 0x89, 0x77, 0xeb, 0x48, 0xf5, 0x9f, 0xfd, 0x49,
        0x24, 0xca, 0x1c, 0x60, 0x90, 0x2e, 0x52, 0xf0, 0xa0, 0x89, 0xbc, 0x76, 0x89, 0x70, 0x40,
        0xe0, 0x82, 0xf9, 0x37, 0x76, 0x38, 0x48, 0x64, 0x5e, 0x07, 0x05,
    ];
    const BOXED: [u8; 147] = [
        0xf3, 0xff, 0xc7, 0x70, 0x3f, 0x94, 0x00, 0xe5, 0x2a, 0x7d, 0xfb, 0x4b, 0x3d, 0x33, 0x05,
        0xd9, 0x8e, 0x99, 0x3b, 0x9f, 0x48, 0x68, 0x12, 0x73, 0xc2, 0x96, 0x50, 0xba, 0x32, 0xfc,
        0x76, 0xce, 0x48, 0x33, 0x2e, 0xa7, 0x16, 0x4d, 0x96, 0xa4, 0x47, 0x6f, 0xb8, 0xc5, 0x31,
        0xa1, 0x18, 0x6a, 0xc0, 0xdf, 0xc1, 0x7c, 0x98, 0xdc, 0xe8, 0x7b, 0x4d, 0xa7, 0xf0, 0x11,
        0xec, 0x48, 0xc9, 0x72, 0x71, 0xd2, 0xc2, 0x0f, 0x9b, 0x92, 0x8f, 0xe2, 0x27, 0x0d, 0x6f,
        0xb8, 0x63, 0xd5, 0x17, 0x38, 0xb4, 0x8e, 0xee, 0xe3, 0x14, 0xa7, 0xcc, 0x8a, 0xb9, 0x32,
        0x16, 0x45, 0x48, 0xe5, 0x26, 0xae, 0x90, 0x22, 0x43, 0x68, 0x51, 0x7a, 0xcf, 0xea, 0xbd,
        0x6b, 0xb3, 0x73, 0x2b, 0xc0, 0xe9, 0xda, 0x99, 0x83, 0x2b, 0x61, 0xca, 0x01, 0xb6, 0xde,
        0x56, 0x24, 0x4a, 0x9e, 0x88, 0xd5, 0xf9, 0xb3, 0x79, 0x73, 0xf6, 0x22, 0xa4, 0x3d, 0x14,
        0xa6, 0x59, 0x9b, 0x1f, 0x65, 0x4c, 0xb4, 0x5a, 0x74, 0xe3, 0x55, 0xa5,
    ];

    #[test]
    fn libsodium_known_answer() {
        let alice = key(ALICE_SK);
        let bob = key(BOB_SK);
        assert_eq!(alice.public_key().as_bytes(), &ALICE_PK);
        assert_eq!(bob.public_key().as_bytes(), &BOB_PK);

        let nonce = Nonce::clone_from_slice(&NONCE);
        let boxed = seal_with_nonce(&alice, &PublicKey::from(BOB_PK), &nonce, &MESSAGE).unwrap();
        assert_eq!(boxed, BOXED);

        let opened = open(
            &bob,
            &B64.encode(ALICE_PK),
            &B64.encode(BOXED),
            &B64.encode(NONCE),
        )
        .unwrap();
        assert_eq!(opened, MESSAGE);
    }
}
