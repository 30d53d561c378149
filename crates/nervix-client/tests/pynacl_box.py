"""The PyNaCl side of the crypto_box interoperability test.

Run by nervix-server's `tests/api/messages.rs` (case `pynacl_interop`) with a Python that has
PyNaCl: messages this script seals travel through the Nervix API and are opened by the Rust
SDK (`nervix_client::crypto`), and the other way round. Keys, payloads and nonces are standard
padded base64, as on the wire. One command per run; the answer is one JSON object on stdout.

    keygen                                    -> {"secret", "public"}   (X25519)
    seal SENDER_SECRET RECIPIENT_PUBLIC TEXT  -> {"payload", "nonce"}   (TEXT: base64 plaintext)
    open RECIPIENT_SECRET SENDER_PUBLIC PAYLOAD NONCE -> {"plaintext"}
"""

import base64
import json
import sys

from nacl.public import Box, PrivateKey, PublicKey


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def main(argv: list[str]) -> dict:
    command, args = argv[0], argv[1:]
    if command == "keygen":
        key = PrivateKey.generate()
        return {"secret": b64(bytes(key)), "public": b64(bytes(key.public_key))}
    if command == "seal":
        sender, recipient, text = args
        box = Box(PrivateKey(unb64(sender)), PublicKey(unb64(recipient)))
        # A fresh random 24-byte nonce; `ciphertext` is tag || ciphertext, without the nonce.
        sealed = box.encrypt(unb64(text))
        return {"payload": b64(sealed.ciphertext), "nonce": b64(sealed.nonce)}
    if command == "open":
        recipient, sender, payload, nonce = args
        box = Box(PrivateKey(unb64(recipient)), PublicKey(unb64(sender)))
        return {"plaintext": b64(box.decrypt(unb64(payload), unb64(nonce)))}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
