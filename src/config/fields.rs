//! The list of every configuration field path, derived from the types' own `Deserialize`
//! impls (so it cannot drift from them), for the test that keeps docs/configuration.md
//! complete.
//!
//! The walk drives `Config::deserialize` with a deserializer that follows a route of
//! fields; at the route's end, the struct's field list (which serde hands every
//! deserializer) is recorded, and each field becomes a new route to follow.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::Config;

/// One step of a route through the configuration's types.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A named field of a struct.
    Field(&'static str),
    /// Any item of a list, shown `[]`.
    Item,
    /// Any entry of a map, shown `.*`.
    Entry,
}

/// Every field path of connector.yaml, parents before children: `source.port`,
/// `entities[].streaming.topicPrefix`, `kafka.librdkafka.*`.
pub(super) fn field_paths() -> Vec<String> {
    let mut paths = Vec::new();
    let mut queue = VecDeque::from([Vec::new()]);
    while let Some(route) = queue.pop_front() {
        let found = RefCell::new(Vec::new());
        // The walk always ends in an error once it has recorded what it found.
        let _ = Config::deserialize(Walker {
            route: &route,
            found: &found,
        });
        for step in found.into_inner() {
            let mut next = route.clone();
            next.push(step);
            paths.push(render(&next));
            queue.push_back(next);
        }
    }
    paths
}

fn render(route: &[Step]) -> String {
    let mut text = String::new();
    for step in route {
        match step {
            Step::Field(name) if text.is_empty() => text.push_str(name),
            Step::Field(name) => {
                text.push('.');
                text.push_str(name);
            }
            Step::Item => text.push_str("[]"),
            Step::Entry => text.push_str(".*"),
        }
    }
    text
}

/// Ends every walk: at a leaf, at the end of a route, or off the route.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// Follows `route`, then records the fields, items or entries found where it ends.
#[derive(Clone, Copy)]
struct Walker<'a> {
    route: &'a [Step],
    found: &'a RefCell<Vec<Step>>,
}

impl<'a> Walker<'a> {
    fn rest(self) -> Walker<'a> {
        Walker {
            route: self.route.get(1..).unwrap_or_default(),
            found: self.found,
        }
    }
}

impl<'de> de::Deserializer<'de> for Walker<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.route.first() {
            None => {
                self.found
                    .borrow_mut()
                    .extend(fields.iter().map(|f| Step::Field(f)));
                Err(Stop)
            }
            Some(Step::Field(name)) => visitor.visit_map(OneEntry {
                key: Some(name),
                value: self.rest(),
            }),
            Some(_) => Err(Stop),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        match self.route.first() {
            None => {
                self.found.borrow_mut().push(Step::Entry);
                Err(Stop)
            }
            Some(Step::Entry) => visitor.visit_map(OneEntry {
                key: Some("*"),
                value: self.rest(),
            }),
            Some(_) => Err(Stop),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        match self.route.first() {
            None => {
                self.found.borrow_mut().push(Step::Item);
                Err(Stop)
            }
            Some(Step::Item) => visitor.visit_seq(OneItem(Some(self.rest()))),
            Some(_) => Err(Stop),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A map or struct with one entry: `key` and a walker for its value.
struct OneEntry<'a> {
    key: Option<&'static str>,
    value: Walker<'a>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => {
                let key: StrDeserializer<'_, Stop> = key.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Stop> {
        seed.deserialize(self.value)
    }
}

/// A list with one item, walked.
struct OneItem<'a>(Option<Walker<'a>>);

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = Stop;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Stop> {
        match self.0.take() {
            Some(walker) => seed.deserialize(walker).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md, which must name every field path in backquotes.
    const REFERENCE: &str = include_str!("../../docs/configuration.md");

    #[test]
    fn walk_finds_nested_fields() {
        let paths = field_paths();
        for expected in [
            "source",
            "source.port",
            "kafka.librdkafka.*",
            "schemaRegistry.password",
            "streaming.lanes.BULK.maxEventsPerSecond",
            "streaming.priorityWeights.CRITICAL",
            "telemetry.listen",
            "entities[].streaming.priorityOverrides.DELETE",
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn every_field_is_documented() {
        let missing: Vec<String> = field_paths()
            .into_iter()
            // The four lanes share one description.
            .map(|path| match path.strip_prefix("streaming.lanes.") {
                Some(rest) => {
                    let field = rest.split_once('.').map_or("", |(_, field)| field);
                    format!("streaming.lanes.<PRIORITY>.{field}")
                        .trim_end_matches('.')
                        .to_owned()
                }
                None => path,
            })
            .filter(|path| !REFERENCE.contains(&format!("`{path}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md does not document these fields: {missing:?}"
        );
    }
}
