//! Templates for `scope`, `reason` and context values: literal text with `{path.NAME}`,
//! `{query.NAME}`, `{header.NAME}`, `{claim.NAME}`, `{body.POINTER}` and `{caller}` references.

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        // SKELETON
        Ok(Self {
            source: source.to_owned(),
        })
    }

    pub fn needs_body(&self) -> bool {
        self.source.contains("{body.")
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}
