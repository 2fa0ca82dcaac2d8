//! Typed access to a node's attributes.

use super::data::{Data, decode};
use super::proto::{AttributeProto, attribute_type as at};

/// A node's attributes, looked up by name.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a> {
    attrs: &'a [AttributeProto],
}

impl<'a> Attrs<'a> {
    /// Attributes over `attrs`.
    pub fn new(attrs: &'a [AttributeProto]) -> Self {
        Self { attrs }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.attrs.iter().find(|a| a.name.as_deref() == Some(name))
    }

    /// True when the node sets `name`.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn typed(
        &self,
        name: &str,
        want: i32,
        what: &str,
    ) -> Result<Option<&'a AttributeProto>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.ref_attr_name.is_some() => Err(format!(
                "attribute {name} refers to a function attribute, which odin does not support"
            )),
            // Old writers leave the type out; trust the field then.
            Some(a) if a.r#type.is_none() || a.r#type == Some(want) => Ok(Some(a)),
            Some(_) => Err(format!("attribute {name} must be {what}")),
        }
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self
            .typed(name, at::INT, "an integer")?
            .map(|a| a.i.unwrap_or(0)))
    }

    /// An integer attribute with a default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A float attribute.
    pub fn float(&self, name: &str) -> Result<Option<f32>, String> {
        Ok(self
            .typed(name, at::FLOAT, "a float")?
            .map(|a| a.f.unwrap_or(0.0)))
    }

    /// A float attribute with a default.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    /// A list of integers.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self
            .typed(name, at::INTS, "a list of integers")?
            .map(|a| a.ints.clone()))
    }

    /// A list of floats.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self
            .typed(name, at::FLOATS, "a list of floats")?
            .map(|a| a.floats.clone()))
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        self.typed(name, at::STRING, "a string")?
            .map(|a| {
                String::from_utf8(a.s.clone().unwrap_or_default())
                    .map_err(|_| format!("attribute {name} is not UTF-8"))
            })
            .transpose()
    }

    /// A string attribute with a default.
    pub fn string_or(&self, name: &str, default: &str) -> Result<String, String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// A tensor attribute, decoded (external data is not allowed here).
    pub fn tensor(&self, name: &str) -> Result<Option<Data>, String> {
        self.typed(name, at::TENSOR, "a tensor")?
            .map(|a| {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| format!("attribute {name} has no tensor"))?;
                decode(t, t.raw_data.as_deref()).map_err(|e| format!("attribute {name}: {e}"))
            })
            .transpose()
    }

    /// True when the node carries a graph attribute (control flow).
    pub fn has_graph(&self) -> bool {
        self.attrs
            .iter()
            .any(|a| a.g.is_some() || a.r#type == Some(at::GRAPH))
    }

    /// Names of all attributes, for messages.
    pub fn names(&self) -> Vec<&'a str> {
        self.attrs
            .iter()
            .filter_map(|a| a.name.as_deref())
            .collect()
    }
}

/// A required attribute's value, or an error naming it.
pub fn required<T>(v: Result<Option<T>, String>, name: &str) -> Result<T, String> {
    v?.ok_or_else(|| format!("attribute {name} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, ty: i32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(ty),
            ..Default::default()
        }
    }

    #[test]
    fn typed_lookup() {
        let attrs = vec![
            AttributeProto {
                i: Some(3),
                ..attr("axis", at::INT)
            },
            AttributeProto {
                ints: vec![1, 2],
                ..attr("pads", at::INTS)
            },
            AttributeProto {
                s: Some(b"SAME_UPPER".to_vec()),
                ..attr("auto_pad", at::STRING)
            },
            AttributeProto {
                f: Some(0.5),
                ..attr("alpha", at::FLOAT)
            },
        ];
        let a = Attrs::new(&attrs);
        assert_eq!(a.int("axis").unwrap(), Some(3));
        assert_eq!(a.int_or("missing", 7).unwrap(), 7);
        assert_eq!(a.ints("pads").unwrap(), Some(vec![1, 2]));
        assert_eq!(a.string("auto_pad").unwrap().as_deref(), Some("SAME_UPPER"));
        assert_eq!(a.float_or("alpha", 1.0).unwrap(), 0.5);
        assert!(
            a.int("pads")
                .unwrap_err()
                .contains("pads must be an integer")
        );
        assert!(
            required(a.int("group"), "group")
                .unwrap_err()
                .contains("group is required")
        );
    }
}
