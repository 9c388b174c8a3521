//! AMF0 command messages (RTMP spec 1.0, section 7.2): `connect`, `createStream`, `publish`,
//! `play`, `onStatus`, `_result`, ...
//!
//! Every command is a sequence of AMF0 values: the command name (a string), a transaction id
//! (a number), a command object (an object, or null) and optional further arguments.

use crate::amf0::{self, Amf0Error, Amf0Limits, Amf0Value};

/// A decoded command message.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The command name.
    pub name: String,
    /// The transaction id (0 when the sender expects no answer).
    pub transaction_id: f64,
    /// The command object (`Null` when absent).
    pub object: Amf0Value,
    /// The values after the command object.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// A command from its parts.
    pub fn new(
        name: impl Into<String>,
        transaction_id: f64,
        object: Amf0Value,
        args: Vec<Amf0Value>,
    ) -> Self {
        Command {
            name: name.into(),
            transaction_id,
            object,
            args,
        }
    }

    /// Decodes an AMF0 command body.
    pub fn decode(body: &[u8], limits: &Amf0Limits) -> Result<Self, Amf0Error> {
        let mut values = amf0::decode_all(body, limits)?.into_iter();
        let name = match values.next() {
            Some(Amf0Value::String(s)) | Some(Amf0Value::LongString(s)) => s,
            _ => {
                return Err(Amf0Error::Invalid {
                    offset: 0,
                    what: "command name is not a string",
                })
            }
        };
        // Some senders put a non-number here; treat it as "no answer expected".
        let transaction_id = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let object = values.next().unwrap_or(Amf0Value::Null);
        Ok(Command {
            name,
            transaction_id,
            object,
            args: values.collect(),
        })
    }

    /// Encodes the command body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        amf0::encode(&Amf0Value::String(self.name.clone()), &mut out);
        amf0::encode(&Amf0Value::Number(self.transaction_id), &mut out);
        amf0::encode(&self.object, &mut out);
        for a in &self.args {
            amf0::encode(a, &mut out);
        }
        out
    }

    /// The string argument at `i`, if it is one.
    pub fn arg_str(&self, i: usize) -> Option<&str> {
        self.args.get(i).and_then(|v| v.as_str())
    }

    /// The number argument at `i`, if it is one.
    pub fn arg_f64(&self, i: usize) -> Option<f64> {
        self.args.get(i).and_then(|v| v.as_f64())
    }
}

/// An `onStatus` info object.
pub fn status_info(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::object([
        ("level", Amf0Value::string(level)),
        ("code", Amf0Value::string(code)),
        ("description", Amf0Value::string(description)),
    ])
}

/// `onStatus(0, null, {level, code, description})`.
pub fn on_status(level: &str, code: &str, description: &str) -> Command {
    Command::new(
        "onStatus",
        0.0,
        Amf0Value::Null,
        vec![status_info(level, code, description)],
    )
}

/// Reads `level`, `code` and `description` from an info object (missing ones are empty).
pub fn read_status(info: &Amf0Value) -> (String, String, String) {
    let s = |k: &str| {
        info.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    (s("level"), s("code"), s("description"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Command::new(
            "publish",
            5.0,
            Amf0Value::Null,
            vec![Amf0Value::string("key?x=1"), Amf0Value::string("live")],
        );
        let d = Command::decode(&c.encode(), &Amf0Limits::default()).unwrap();
        assert_eq!(d, c);
        assert_eq!(d.arg_str(0), Some("key?x=1"));
    }

    #[test]
    fn name_must_be_string() {
        let body = amf0::encode_all(&[Amf0Value::Number(1.0)]);
        assert!(matches!(
            Command::decode(&body, &Amf0Limits::default()),
            Err(Amf0Error::Invalid { .. })
        ));
    }

    #[test]
    fn status() {
        let c = on_status("error", "NetStream.Publish.BadName", "taken");
        let (l, code, d) = read_status(&c.args[0]);
        assert_eq!(
            (l.as_str(), code.as_str(), d.as_str()),
            ("error", "NetStream.Publish.BadName", "taken")
        );
    }
}
