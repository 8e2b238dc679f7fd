//! The layout of the JSON the report writes: serde_json's output (serde derive does the
//! documents, serde_json the strings and numbers), laid out for a reader too.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// `value` as JSON: `"key": value` and `, ` between items; the containers of the first
/// `depth` levels one item per line, indented by two spaces, deeper ones on one line
/// (`depth` 0: all on one line). Numbers that are not finite are `null`.
pub fn to_string<T: Serialize + ?Sized>(value: &T, depth: usize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        Layout {
            depth,
            level: 0,
            has_value: false,
        },
    );
    value
        .serialize(&mut ser)
        .expect("a report serializes: no maps with non-string keys");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// See [`to_string`]; its state is serde_json's `PrettyFormatter`'s.
struct Layout {
    /// Levels laid out one item per line.
    depth: usize,
    /// Containers open now.
    level: usize,
    /// The container just closed, or the one open, has an item.
    has_value: bool,
}

impl Layout {
    fn begin<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn end<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level -= 1;
        if self.has_value && self.level < self.depth {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    /// Before an item: its separator, and a new line if its container has one per item.
    fn item<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.level <= self.depth {
            self.newline(w)
        } else if first {
            Ok(())
        } else {
            w.write_all(b" ")
        }
    }

    fn newline<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.level {
            w.write_all(b"  ")?;
        }
        Ok(())
    }
}

impl Formatter for Layout {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.begin(w, b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, b"]")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.begin(w, b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, b"}")
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::to_string;
    use serde_json::json;

    #[test]
    fn outer_levels_get_a_line_per_item_inner_ones_one_line() {
        let v = json!({"a": {"b": [1, 2], "c": {}}, "d": [], "e": [{"f": "x\"\n"}]});
        assert_eq!(
            to_string(&v, 2),
            "{\n  \"a\": {\n    \"b\": [1, 2],\n    \"c\": {}\n  },\n  \"d\": [],\n  \
             \"e\": [\n    {\"f\": \"x\\\"\\n\"}\n  ]\n}"
        );
        assert_eq!(
            to_string(&v, 0),
            r#"{"a": {"b": [1, 2], "c": {}}, "d": [], "e": [{"f": "x\"\n"}]}"#
        );
        // The same document, whatever the layout.
        let back: serde_json::Value = serde_json::from_str(&to_string(&v, 1)).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn numbers_that_are_not_finite_are_null() {
        assert_eq!(
            to_string(&[f64::NAN, f64::INFINITY, 1.5], 0),
            "[null, null, 1.5]"
        );
    }
}
