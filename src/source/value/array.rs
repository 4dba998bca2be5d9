//! Arrays in PostgreSQL's text format: `{{1,2},{3,NULL}}`, `[0:1]={7,8}`, `{}`, quoted and
//! escaped elements, and the element type's delimiter (`;` for `box`).

use super::{parse_text, PgType, Value, ValueError};

/// PostgreSQL's limit on array dimensions (MAXDIM); deeper nesting is not PostgreSQL output.
const MAX_DIMS: usize = 6;

/// An array value with any number of dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    /// The length of each dimension, outermost first; empty for `{}`.
    pub dims: Vec<i32>,
    /// The lower bound of each dimension (1 unless PostgreSQL printed `[lb:ub]=`).
    pub lower_bounds: Vec<i32>,
    /// The elements in row-major order; NULL elements are [`Value::Null`].
    pub elements: Vec<Value>,
}

impl Array {
    /// As JSON: nested arrays following `dims` (`[]` for `{}`), NULL elements as `null`.
    /// Lower bounds are not part of it: callers that need them read [`Array::lower_bounds`].
    pub fn to_json(&self) -> serde_json::Value {
        nest(&self.elements, &self.dims)
    }
}

/// Nests row-major elements into JSON arrays of the given dimensions.
fn nest(elements: &[Value], dims: &[i32]) -> serde_json::Value {
    match dims {
        [] => serde_json::Value::Array(Vec::new()),
        [_] => serde_json::Value::Array(
            elements
                .iter()
                .map(|element| element.to_json().unwrap_or(serde_json::Value::Null))
                .collect(),
        ),
        [_, inner @ ..] => {
            // Dimensions are positive once parsed; a product of zero cannot occur.
            let chunk = inner
                .iter()
                .map(|d| usize::try_from(*d).unwrap_or(0))
                .product::<usize>()
                .max(1);
            serde_json::Value::Array(
                elements
                    .chunks(chunk)
                    .map(|chunk| nest(chunk, inner))
                    .collect(),
            )
        }
    }
}

/// Parses an array's text, each element with `parse_text(element)`.
pub(super) fn parse_array(
    ty: &PgType,
    element: &PgType,
    delimiter: u8,
    text: &str,
) -> Result<Value, ValueError> {
    let fail = |reason: String| ValueError::with_reason(ty, text, reason);
    let mut parser = Parser {
        bytes: text.as_bytes(),
        position: 0,
        delimiter,
        dims: Vec::new(),
        leaf_depth: None,
        raw: Vec::new(),
    };
    let declared = parser.decoration().map_err(&fail)?;
    parser.level(0).map_err(&fail)?;
    parser.skip_whitespace();
    if parser.position != parser.bytes.len() {
        return Err(fail("junk after closing brace".to_owned()));
    }
    let Parser { dims, raw, .. } = parser;
    // Every level entered has closed by now, so each dimension has its length.
    let dims: Vec<i32> = dims.into_iter().map(|d| d.unwrap_or(0)).collect();
    // `{}` enters the top level and closes it without elements: no dimensions.
    let dims = if raw.is_empty() { Vec::new() } else { dims };
    let lower_bounds = match declared {
        Some(bounds) => {
            let lengths: Vec<i32> = bounds.iter().map(|(_, length)| *length).collect();
            if lengths != dims {
                return Err(fail("dimensions do not match the bounds".to_owned()));
            }
            bounds.into_iter().map(|(lower, _)| lower).collect()
        }
        None => vec![1; dims.len()],
    };
    let mut elements = Vec::with_capacity(raw.len());
    for (index, item) in raw.into_iter().enumerate() {
        let value = match item {
            None => Value::Null,
            Some(item) => parse_text(element, &item)
                .map_err(|error| fail(format!("element {}: {error}", index + 1)))?,
        };
        elements.push(value);
    }
    Ok(Value::Array(Array {
        dims,
        lower_bounds,
        elements,
    }))
}

/// A recursive-descent reader of the array syntax, collecting raw element texts.
struct Parser<'a> {
    /// The whole text.
    bytes: &'a [u8],
    /// The next byte to read.
    position: usize,
    /// The element delimiter.
    delimiter: u8,
    /// The length of each dimension, once a sub-array at that depth has closed.
    dims: Vec<Option<i32>>,
    /// The depth at which elements sit, once one has been seen.
    leaf_depth: Option<usize>,
    /// The element texts, `None` for an unquoted NULL.
    raw: Vec<Option<String>>,
}

impl Parser<'_> {
    /// The next byte, if any.
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    /// Skips whitespace, which array_in allows around elements and braces.
    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.position += 1;
        }
    }

    /// Reads `[lb:ub][lb:ub]...=` if present: (lower bound, length) per dimension.
    fn decoration(&mut self) -> Result<Option<Vec<(i32, i32)>>, String> {
        if self.peek() != Some(b'[') {
            return Ok(None);
        }
        let mut bounds = Vec::new();
        while self.peek() == Some(b'[') {
            let close = self.bytes[self.position..]
                .iter()
                .position(|b| *b == b']')
                .ok_or("unterminated dimension bounds")?;
            let inside = std::str::from_utf8(&self.bytes[self.position + 1..self.position + close])
                .map_err(|_| "invalid dimension bounds")?;
            let (lower, upper) = inside
                .split_once(':')
                .ok_or("dimension bounds without ':'")?;
            let lower = bound(lower)?;
            let upper = bound(upper)?;
            let length = i64::from(upper) - i64::from(lower) + 1;
            let length =
                i32::try_from(length).map_err(|_| "dimension bounds out of range".to_owned())?;
            if length < 1 {
                return Err("upper bound below lower bound".to_owned());
            }
            bounds.push((lower, length));
            self.position += close + 1;
        }
        if self.peek() != Some(b'=') {
            return Err("missing '=' after dimension bounds".to_owned());
        }
        self.position += 1;
        Ok(Some(bounds))
    }

    /// Reads one `{...}` at `depth`, checking that it has the same shape as its siblings.
    fn level(&mut self, depth: usize) -> Result<(), String> {
        if depth >= MAX_DIMS {
            return Err(format!("more than {MAX_DIMS} dimensions"));
        }
        self.skip_whitespace();
        if self.peek() != Some(b'{') {
            return Err("expected '{'".to_owned());
        }
        self.position += 1;
        if self.dims.len() == depth {
            self.dims.push(None);
        }
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            // Only the whole array may be empty: `{}`.
            return if depth == 0 {
                Ok(())
            } else {
                Err("empty sub-array".to_owned())
            };
        }
        let mut count: i32 = 0;
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b'{') {
                if self.leaf_depth.is_some_and(|leaf| leaf <= depth) {
                    return Err("elements and sub-arrays mixed".to_owned());
                }
                self.level(depth + 1)?;
            } else {
                match self.leaf_depth {
                    None => self.leaf_depth = Some(depth),
                    Some(leaf) if leaf == depth => {}
                    Some(_) => return Err("elements at different depths".to_owned()),
                }
                let item = self.element()?;
                self.raw.push(item);
            }
            count = count.checked_add(1).ok_or("too many elements")?;
            self.skip_whitespace();
            match self.peek() {
                Some(b) if b == self.delimiter => self.position += 1,
                Some(b'}') => {
                    self.position += 1;
                    break;
                }
                _ => return Err("expected delimiter or '}'".to_owned()),
            }
        }
        match self.dims.get_mut(depth) {
            Some(Some(length)) if *length != count => Err("ragged array".to_owned()),
            Some(Some(_)) => Ok(()),
            Some(slot) => {
                *slot = Some(count);
                Ok(())
            }
            None => Err("ragged array".to_owned()),
        }
    }

    /// Reads one element: quoted (`"a,b"`, backslash escapes) or unquoted (an unquoted
    /// `NULL`, in any case, is SQL NULL; a quoted `"NULL"` is the string).
    fn element(&mut self) -> Result<Option<String>, String> {
        let mut out = Vec::new();
        if self.peek() == Some(b'"') {
            self.position += 1;
            loop {
                match self.peek() {
                    None => return Err("unterminated quoted element".to_owned()),
                    Some(b'"') => {
                        self.position += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let escaped = self
                            .bytes
                            .get(self.position + 1)
                            .ok_or("dangling backslash")?;
                        out.push(*escaped);
                        self.position += 2;
                    }
                    Some(b) => {
                        out.push(b);
                        self.position += 1;
                    }
                }
            }
            return String::from_utf8(out)
                .map(Some)
                .map_err(|_| "invalid utf-8 in element".to_owned());
        }
        // Unquoted: up to the delimiter or '}', trailing unescaped whitespace dropped.
        let mut escaped_any = false;
        let mut kept_len = 0;
        loop {
            match self.peek() {
                None => return Err("unterminated array".to_owned()),
                Some(b) if b == self.delimiter || b == b'}' => break,
                Some(b'"' | b'{') => return Err("unexpected '\"' or '{' in element".to_owned()),
                Some(b'\\') => {
                    let escaped = self
                        .bytes
                        .get(self.position + 1)
                        .ok_or("dangling backslash")?;
                    out.push(*escaped);
                    kept_len = out.len();
                    escaped_any = true;
                    self.position += 2;
                }
                Some(b) => {
                    out.push(b);
                    if !b.is_ascii_whitespace() {
                        kept_len = out.len();
                    }
                    self.position += 1;
                }
            }
        }
        out.truncate(kept_len);
        if out.is_empty() {
            return Err("empty unquoted element".to_owned());
        }
        if !escaped_any && out.eq_ignore_ascii_case(b"NULL") {
            return Ok(None);
        }
        String::from_utf8(out)
            .map(Some)
            .map_err(|_| "invalid utf-8 in element".to_owned())
    }
}

/// A dimension bound: `-?[0-9]+` within i32.
fn bound(text: &str) -> Result<i32, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid dimension bound".to_owned());
    }
    text.parse()
        .map_err(|_| "dimension bound out of range".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(ty: &PgType, text: &str) -> Array {
        match parse_text(ty, text) {
            Ok(Value::Array(array)) => array,
            other => panic!("{text} should parse as an array, got {other:?}"),
        }
    }

    fn json(ty: &PgType, text: &str) -> String {
        let value = parse_text(ty, text).unwrap_or_else(|e| panic!("{text}: {e}"));
        serde_json::to_string(&value.to_json()).expect("serializes")
    }

    fn int4s() -> PgType {
        PgType::builtin(1007, -1).expect("int4[]")
    }

    fn texts() -> PgType {
        PgType::builtin(1009, -1).expect("text[]")
    }

    fn boxes() -> PgType {
        PgType::builtin(1020, -1).expect("box[]")
    }

    #[test]
    fn case_09_multidimensional_with_null() {
        let parsed = array(&int4s(), "{{1,2},{3,NULL}}");
        assert_eq!(parsed.dims, vec![2, 2]);
        assert_eq!(parsed.lower_bounds, vec![1, 1]);
        assert_eq!(
            parsed.elements,
            vec![Value::Int4(1), Value::Int4(2), Value::Int4(3), Value::Null]
        );
        assert_eq!(json(&int4s(), "{{1,2},{3,NULL}}"), "[[1,2],[3,null]]");
        assert_eq!(json(&int4s(), "{{{1}},{{2}}}"), "[[[1]],[[2]]]");
        assert_eq!(array(&int4s(), "{{{1}},{{2}}}").dims, vec![2, 1, 1]);
    }

    #[test]
    fn case_09_null_versus_the_string_null() {
        assert_eq!(
            json(&texts(), r#"{"NULL",NULL,"null"}"#),
            r#"["NULL",null,"null"]"#
        );
        assert_eq!(json(&texts(), "{nUlL,x}"), "[null,\"x\"]");
        assert_eq!(json(&texts(), r"{\NULL}"), "[\"NULL\"]");
    }

    #[test]
    fn case_09_empty_arrays() {
        let empty = array(&int4s(), "{}");
        assert!(empty.dims.is_empty() && empty.lower_bounds.is_empty());
        assert!(empty.elements.is_empty());
        assert_eq!(json(&int4s(), "{}"), "[]");
        assert_eq!(json(&texts(), "{}"), "[]");
        assert_eq!(json(&boxes(), "{}"), "[]");
    }

    #[test]
    fn case_09_quoting_and_escapes() {
        assert_eq!(
            json(
                &texts(),
                r#"{"","a,b","say \"hi\"","back\\slash"," lead","{x}"}"#
            ),
            r#"["","a,b","say \"hi\"","back\\slash"," lead","{x}"]"#
        );
        assert_eq!(
            json(&texts(), "{\"a b\",\"\",\"tab\t\",é,\"x\\\"y\",\"NuLl\"}"),
            "[\"a b\",\"\",\"tab\\t\",\"é\",\"x\\\"y\",\"NuLl\"]"
        );
    }

    #[test]
    fn case_09_lower_bounds_kept() {
        let parsed = array(&int4s(), "[0:1]={7,8}");
        assert_eq!(parsed.dims, vec![2]);
        assert_eq!(parsed.lower_bounds, vec![0]);
        assert_eq!(json(&int4s(), "[0:1]={7,8}"), "[7,8]");
        let two = array(&int4s(), "[0:1][2:3]={{1,2},{3,4}}");
        assert_eq!(two.dims, vec![2, 2]);
        assert_eq!(two.lower_bounds, vec![0, 2]);
        assert_eq!(array(&int4s(), "[-3:-2]={1,2}").lower_bounds, vec![-3]);
    }

    #[test]
    fn case_09_box_arrays_use_semicolons() {
        assert_eq!(
            json(&boxes(), "{(1,1),(0,0);(3,3),(2,2)}"),
            r#"["(1,1),(0,0)","(3,3),(2,2)"]"#
        );
        assert_eq!(
            array(&boxes(), "{(1,1),(0,0);(3,3),(2,2)}").elements[0],
            Value::Unknown {
                type_name: "box".to_owned(),
                text: "(1,1),(0,0)".to_owned()
            }
        );
    }

    #[test]
    fn case_06_interval_arrays() {
        let intervals = PgType::builtin(1187, -1).expect("interval[]");
        assert_eq!(json(&intervals, r#"{P1D,PT24H}"#), r#"["P1D","PT24H"]"#);
        assert_eq!(
            json(&intervals, r#"{"1 day",24:00:00}"#),
            r#"["P1D","PT24H"]"#
        );
        assert_eq!(json(&intervals, r#"{"30 days"}"#), r#"["P30D"]"#);
        assert_ne!(
            parse_text(&intervals, "{P1D}").ok(),
            parse_text(&intervals, "{PT24H}").ok()
        );
    }

    #[test]
    fn case_10_enum_arrays() {
        let moods = PgType::Array {
            element: Box::new(PgType::Enum {
                name: "case10.Mood".to_owned(),
                labels: Vec::new(),
            }),
            delimiter: b',',
        };
        assert_eq!(json(&moods, "{sad,happy}"), r#"["sad","happy"]"#);
        assert_eq!(json(&moods, "{ecstatic,ok}"), r#"["ecstatic","ok"]"#);
    }

    #[test]
    fn whitespace_around_elements_as_array_in_accepts_it() {
        assert_eq!(json(&texts(), "{ a b , c }"), r#"["a b","c"]"#);
        assert_eq!(json(&int4s(), "{ {1, 2} , {3,4} }"), "[[1,2],[3,4]]");
    }

    #[test]
    fn rejects_ragged_and_malformed_arrays() {
        for text in [
            "",
            "{",
            "}",
            "{1,2",
            "{1,,2}",
            "{,}",
            "{1,2}}",
            "{{1,2},{3}}",
            "{{1},2}",
            "{1,{2}}",
            "{{1,2},{3,4},5}",
            "{{}}",
            "{{},{}}",
            "{\"1}",
            "{1\"2\"}",
            "[1:2]={1}",
            "[0:1]{1,2}",
            "[1:0]={}",
            "[a:b]={1}",
            "[1:2]={{1,2},{3,4}}",
            "{1} x",
            "{{{{{{{1}}}}}}}",
            "{x}",
            "1,2",
            "{1;2}",
            "{\"\"}",
        ] {
            assert!(parse_text(&int4s(), text).is_err(), "{text:?}");
        }
        assert!(parse_text(&texts(), "{a\"b}").is_err());
        assert!(parse_text(&texts(), "{a\\").is_err());
    }

    #[test]
    fn element_errors_name_the_element() {
        let error = parse_text(&int4s(), "{1,x}").expect_err("x is no int4");
        assert_eq!(
            error.to_string(),
            "invalid int4[] value \"{1,x}\": element 2: invalid int4 value \"x\""
        );
    }
}
