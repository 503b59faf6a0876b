//! The gate's mode: the env flag `MOLECULE_PLATFORM_APPROVAL_GATE` and per-route ceilings.

/// Ordered: `Off < Shadow < Enforce`, so a route's ceiling is `min(global, route)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The gate does nothing: every request is forwarded as is, without route lookup or store.
    Off,
    /// Decisions are made, logged and counted, but every request is forwarded.
    Shadow,
    /// Guards refuse and gated routes need an approval.
    Enforce,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MOLECULE_PLATFORM_APPROVAL_GATE={value:?} is not accepted; use one of: unset, \"\", 0, false, off, no (off); shadow; 1, true, on, yes, enforce (enforce)")]
pub(crate) struct ModeError {
    pub(crate) value: String,
}

impl Mode {
    /// The env flag's name.
    pub(crate) const ENV: &'static str = "MOLECULE_PLATFORM_APPROVAL_GATE";

    /// Parse the env flag (case-insensitive); `None` (unset) is off.
    pub(crate) fn from_flag(value: Option<&str>) -> Result<Mode, ModeError> {
        let Some(raw) = value else {
            return Ok(Mode::Off);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "off" | "no" => Ok(Mode::Off),
            "1" | "true" | "on" | "yes" | "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            _ => Err(ModeError {
                value: raw.to_owned(),
            }),
        }
    }

    /// Gauge value for `approval_gateway_gate_mode`.
    pub(crate) fn gauge(self) -> i64 {
        self as i64
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shadow => "shadow",
            Mode::Enforce => "enforce",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_map_to_modes() {
        let cases: &[(Option<&str>, Option<Mode>)] = &[
            (None, Some(Mode::Off)),
            (Some(""), Some(Mode::Off)),
            (Some("0"), Some(Mode::Off)),
            (Some("FALSE"), Some(Mode::Off)),
            (Some("off"), Some(Mode::Off)),
            (Some("No"), Some(Mode::Off)),
            (Some("1"), Some(Mode::Enforce)),
            (Some("true"), Some(Mode::Enforce)),
            (Some("ON"), Some(Mode::Enforce)),
            (Some("yes"), Some(Mode::Enforce)),
            (Some("Enforce"), Some(Mode::Enforce)),
            (Some("shadow"), Some(Mode::Shadow)),
            (Some("SHADOW"), Some(Mode::Shadow)),
            (Some("2"), None),
            (Some("enabled"), None),
        ];
        for (input, want) in cases {
            assert_eq!(Mode::from_flag(*input).ok(), *want, "flag {input:?}");
        }
    }

    #[test]
    fn invalid_flag_error_names_the_variable_and_values() {
        let err = Mode::from_flag(Some("maybe")).unwrap_err().to_string();
        assert!(err.contains("MOLECULE_PLATFORM_APPROVAL_GATE"));
        assert!(err.contains("shadow") && err.contains("enforce") && err.contains("maybe"));
    }

    #[test]
    fn route_ceiling_is_the_minimum() {
        assert_eq!(Mode::Enforce.min(Mode::Shadow), Mode::Shadow);
        assert_eq!(Mode::Shadow.min(Mode::Enforce), Mode::Shadow);
        assert_eq!(Mode::Off.min(Mode::Enforce), Mode::Off);
    }
}
