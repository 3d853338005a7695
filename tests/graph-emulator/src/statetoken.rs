//! Opaque state tokens ($skiptoken, $deltatoken): the state itself, sealed with a checksum so
//! that a mangled token is detected ("Badly formed token.") instead of misread.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Not a secret: it only makes tampering detectable.
const KEY: &[u8] = b"graph-emulator/state-token/v1";

fn tag(payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(KEY);
    h.update(payload);
    URL_SAFE_NO_PAD.encode(&h.finalize()[..12])
}

pub fn seal(state: &Value) -> String {
    let payload = state.to_string();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        tag(payload.as_bytes())
    )
}

pub fn open(token: &str) -> Option<Value> {
    let (body, mac) = token.trim().split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(body).ok()?;
    if tag(&payload) != mac {
        return None;
    }
    serde_json::from_slice(&payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roundtrip_and_tamper() {
        let t = seal(&json!({"a": 1}));
        assert_eq!(open(&t), Some(json!({"a": 1})));
        let mut bad = t.clone();
        bad.insert(2, 'x');
        assert_eq!(open(&bad), None);
        assert_eq!(open("garbage"), None);
    }
}
