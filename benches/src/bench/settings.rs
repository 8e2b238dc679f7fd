//! The settings of a run, shown above every report (table, CSV, JSON, chart): typed, so
//! that the JSON report carries numbers as numbers and lists as arrays.

use std::fmt;

use super::args::Config;
use super::backend::Backend;
use super::consumer::READ_BUF;
use super::runner::WAIT_TIMEOUT;

/// The unit of a numeric setting: as shown after the number, and as the suffix of its
/// JSON key (`read_buf` 64 B is `"read_buf_bytes": 64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Appended to the number in text (`"B"`, `" round trips"`).
    pub shown: &'static str,
    /// Appended to the JSON key after `_` (`"bytes"`, `"round_trips"`).
    pub json: &'static str,
}

/// No unit (counts, seconds named as such, a seed).
pub const NO_UNIT: Unit = Unit {
    shown: "",
    json: "",
};

/// The value of one setting.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(u64),
    /// A real number.
    Float(f64),
    /// A list of integers (`--streams 100,2000`).
    Ints(Vec<u64>),
    /// A word or a phrase.
    Text(String),
    /// A list of words (`--kinds pipe,unix`).
    Texts(Vec<String>),
    /// Yes or no.
    Bool(bool),
    /// A feature that is off (`--paced` not given): `off`, JSON `null`.
    Off,
}

/// One setting: its name, value and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The name, as in the command line without `--` where there is one.
    pub name: &'static str,
    /// Its value.
    pub value: Value,
    /// The unit of a numeric value.
    pub unit: Unit,
}

impl Setting {
    pub(crate) fn new(name: &'static str, value: Value) -> Setting {
        Setting {
            name,
            value,
            unit: NO_UNIT,
        }
    }

    pub(crate) fn with_unit(
        name: &'static str,
        value: Value,
        shown: &'static str,
        json: &'static str,
    ) -> Setting {
        Setting {
            name,
            value,
            unit: Unit { shown, json },
        }
    }

    /// The JSON key: the name, with the unit's suffix if it has one.
    pub fn json_key(&self) -> String {
        if self.unit.json.is_empty() {
            self.name.to_string()
        } else {
            format!("{}_{}", self.name, self.unit.json)
        }
    }

    /// The JSON value: a number, an array, a string, a boolean or `null` (off).
    pub fn json_value(&self) -> String {
        super::json::to_string(&self.value, 0)
    }

    /// True unless the value is [`Value::Off`].
    pub fn is_on(&self) -> bool {
        self.value != Value::Off
    }
}

/// In JSON: a number, an array, a string, a boolean, or `null` for [`Value::Off`].
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Int(n) => s.serialize_u64(*n),
            Value::Float(x) => s.serialize_f64(*x),
            Value::Ints(v) => v.serialize(s),
            Value::Text(t) => s.serialize_str(t),
            Value::Texts(v) => v.serialize(s),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Off => s.serialize_none(),
        }
    }
}

/// Settings as one JSON object: each [`Setting::json_key`] with its value, in order.
pub struct JsonSettings<'a>(pub &'a [Setting]);

impl serde::Serialize for JsonSettings<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|x| (x.json_key(), &x.value)))
    }
}

/// The value as text, with its unit: `0.5`, `64B`, `100,2000`, `off`, `yes`.
impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = self.unit.shown;
        match &self.value {
            Value::Int(n) => write!(f, "{n}{unit}"),
            Value::Float(x) => write!(f, "{x}{unit}"),
            Value::Ints(v) => {
                let v: Vec<String> = v.iter().map(u64::to_string).collect();
                write!(f, "{}{unit}", v.join(","))
            }
            Value::Text(s) => f.write_str(s),
            Value::Texts(v) => f.write_str(&v.join(",")),
            Value::Bool(b) => f.write_str(if *b { "yes" } else { "no" }),
            Value::Off => f.write_str("off"),
        }
    }
}

/// The file descriptor limit after [`super::streams::raise_nofile_limit`]: its new soft
/// limit (`None`: unlimited), or why it could not be raised.
pub type Nofile = std::io::Result<Option<u64>>;

/// Every setting of a run of `cfg` with the backends `selected` (in rotation order).
pub fn of(cfg: &Config, selected: &[&dyn Backend], nofile: &Nofile) -> Vec<Setting> {
    let names = |v: Vec<&str>| Value::Texts(v.into_iter().map(str::to_string).collect());
    let ints = |v: &[usize]| Value::Ints(v.iter().map(|&n| n as u64).collect());
    let mut s = vec![
        Setting::new("seconds", Value::Float(cfg.seconds)),
        Setting::new("rounds", Value::Int(cfg.rounds as u64)),
        Setting::new("warmup", Value::Float(cfg.warmup)),
        Setting::new("seed", Value::Int(cfg.seed)),
        Setting::with_unit(
            "paced",
            cfg.paced.map_or(Value::Off, Value::Float),
            " writes/s",
            "writes_per_s",
        ),
        Setting::new("batch", Value::Int(cfg.batch as u64)),
        Setting::with_unit("read_buf", Value::Int(READ_BUF as u64), "B", "bytes"),
        Setting::with_unit(
            "wait_timeout",
            Value::Int(WAIT_TIMEOUT.as_millis() as u64),
            "ms",
            "ms",
        ),
        Setting::new("pinning", Value::Text("none".to_string())),
        Setting::new(
            "nofile",
            match nofile {
                Ok(Some(n)) => Value::Int(*n),
                Ok(None) => Value::Text("unlimited".to_string()),
                Err(e) => Value::Text(format!("unchanged ({e})")),
            },
        ),
        Setting::new(
            "kinds",
            names(
                cfg.kinds
                    .iter()
                    .map(|k| k.name())
                    .chain((cfg.pingpong > 0).then_some("pingpong"))
                    .collect(),
            ),
        ),
        Setting::new("streams", ints(&cfg.streams)),
        Setting::new("consumers", ints(&cfg.consumers)),
        Setting::new("modes", names(cfg.modes.iter().map(|m| m.name()).collect())),
        Setting::new(
            "rotation",
            names(selected.iter().map(|b| b.name()).collect()),
        ),
        Setting::with_unit(
            "pingpong",
            if cfg.pingpong > 0 {
                Value::Int(cfg.pingpong as u64)
            } else {
                Value::Off
            },
            " round trips",
            "round_trips",
        ),
    ];
    if cfg.quick {
        s.push(Setting::new("quick", Value::Bool(true)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{Setting, Value};

    #[test]
    fn text_keeps_the_unit_and_json_moves_it_into_the_key() {
        let s = Setting::with_unit("read_buf", Value::Int(64), "B", "bytes");
        assert_eq!(
            (s.to_string(), s.json_key(), s.json_value()),
            ("64B".into(), "read_buf_bytes".into(), "64".into())
        );
        let s = Setting::with_unit("paced", Value::Off, " writes/s", "writes_per_s");
        assert_eq!(
            (s.to_string(), s.json_value(), s.is_on()),
            ("off".into(), "null".into(), false)
        );
        let s = Setting::new("streams", Value::Ints(vec![100, 2000]));
        assert_eq!(
            (s.to_string(), s.json_value()),
            ("100,2000".into(), "[100, 2000]".into())
        );
        let s = Setting::new(
            "kinds",
            Value::Texts(vec!["pipe".into(), "pingpong".into()]),
        );
        assert_eq!(
            (s.to_string(), s.json_value()),
            ("pipe,pingpong".into(), r#"["pipe", "pingpong"]"#.into())
        );
        let s = Setting::new("seconds", Value::Float(0.5));
        assert_eq!(
            (s.to_string(), s.json_value()),
            ("0.5".into(), "0.5".into())
        );
        let s = Setting::new("nofile", Value::Text("unchanged (\"x\")".into()));
        assert_eq!(s.json_value(), r#""unchanged (\"x\")""#);
    }
}
