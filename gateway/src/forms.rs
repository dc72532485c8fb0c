//! Validating submitted values against a plugin's declared form fields.

use std::collections::BTreeMap;

use corral_proto::plugin::v1::{FieldKind, FormField};

use crate::error::FieldErrors;

/// Longest value of one field, in bytes.
pub(crate) const MAX_FIELD_BYTES: usize = 1024 * 1024;

/// Validated values by field name, as the plugin receives them.
pub(crate) type Values = BTreeMap<String, String>;

/// Checks `submitted` against `fields`: required fields present, values of the
/// declared kind. Returns the values the plugin receives (defaults filled in,
/// booleans normalised, fields the form does not declare dropped), or the
/// errors by field, worded as the old runner worded them.
pub(crate) fn validate(
    fields: &[FormField],
    submitted: &BTreeMap<String, String>,
) -> Result<Values, FieldErrors> {
    let mut values = Values::new();
    let mut errors = FieldErrors::new();
    for field in fields {
        let kind = FieldKind::try_from(field.kind).unwrap_or(FieldKind::Text);
        let given = submitted
            .get(&field.field)
            .map(String::as_str)
            .filter(|value| !value.is_empty());
        // A default prefills the form; a required field must still be sent
        // (as the old runner's schemas required it), an optional one takes it.
        let default = field
            .default
            .as_deref()
            .filter(|value| !value.is_empty() && !field.required);
        let Some(value) = given.or(default) else {
            if field.required {
                errors.insert(
                    field.field.clone(),
                    vec!["Missing data for required field.".into()],
                );
            } else if kind == FieldKind::Boolean {
                values.insert(field.field.clone(), "false".into());
            }
            continue;
        };
        match check(kind, field, value) {
            Ok(value) => {
                values.insert(field.field.clone(), value);
            }
            Err(message) => {
                errors.insert(field.field.clone(), vec![message]);
            }
        }
        // An upload's original name travels with it.
        let name_key = format!("{}.name", field.field);
        if let Some(name) = submitted.get(&name_key) {
            values.insert(name_key, name.clone());
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

fn check(kind: FieldKind, field: &FormField, value: &str) -> Result<String, String> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(format!("Longer than maximum length {MAX_FIELD_BYTES}."));
    }
    match kind {
        FieldKind::Integer => value
            .trim()
            .parse::<i64>()
            .map(|number| number.to_string())
            .map_err(|_| "Not a valid integer.".into()),
        FieldKind::Number => match value.trim().parse::<f64>() {
            Ok(number) if number.is_finite() => Ok(value.trim().to_owned()),
            _ => Err("Not a valid number.".into()),
        },
        FieldKind::Boolean => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "1" | "yes" | "y" | "t" => Ok("true".into()),
            "false" | "off" | "0" | "no" | "n" | "f" => Ok("false".into()),
            _ => Err("Not a valid boolean.".into()),
        },
        FieldKind::Choice => {
            if field.choices.iter().any(|choice| choice.value == value) {
                Ok(value.to_owned())
            } else {
                let allowed: Vec<&str> = field
                    .choices
                    .iter()
                    .map(|choice| choice.value.as_str())
                    .collect();
                Err(format!("Must be one of: {}.", allowed.join(", ")))
            }
        }
        FieldKind::Data | FieldKind::File => {
            let scheme = value
                .split_once(':')
                .map(|(scheme, _)| scheme.to_ascii_lowercase());
            match scheme.as_deref() {
                Some("http" | "https") if url::Url::parse(value).is_ok() => Ok(value.to_owned()),
                Some("data") => Ok(value.to_owned()),
                // Local files only as file://localhost/…; the plugin's manifest decides
                // whether it may read them.
                Some("file") if value.starts_with("file://localhost/") => Ok(value.to_owned()),
                _ => Err("Not a valid URL.".into()),
            }
        }
        FieldKind::Plugin => match url::Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(value.to_owned()),
            _ => Err("Not a valid URL.".into()),
        },
        FieldKind::Text | FieldKind::Textarea | FieldKind::Secret | FieldKind::Unspecified => {
            Ok(value.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use corral_proto::plugin::v1::Choice;

    use super::*;

    fn field(name: &str, kind: FieldKind, required: bool) -> FormField {
        FormField {
            field: name.into(),
            kind: kind.into(),
            required,
            ..Default::default()
        }
    }

    fn submitted(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_plugin_reference_must_be_an_http_url_and_a_secret_is_any_text() {
        let fields = [
            field("executor", FieldKind::Plugin, true),
            field("token", FieldKind::Secret, true),
        ];
        let submitted = BTreeMap::from([
            (
                "executor".to_string(),
                "file://localhost/etc/passwd".to_string(),
            ),
            ("token".to_string(), " any text ".to_string()),
        ]);
        let errors = validate(&fields, &submitted).expect_err("a file URL is refused");
        assert_eq!(errors["executor"], vec!["Not a valid URL.".to_string()]);
        assert!(!errors.contains_key("token"));
        let submitted = BTreeMap::from([
            (
                "executor".to_string(),
                "https://corral.example/plugins/sim@v1/".to_string(),
            ),
            ("token".to_string(), " any text ".to_string()),
        ]);
        let values = validate(&fields, &submitted).expect("valid");
        assert_eq!(values["token"], " any text ");
    }

    #[test]
    fn required_fields_and_kinds_are_checked() {
        let mut choice = field("mode", FieldKind::Choice, false);
        choice.choices = vec![
            Choice {
                value: "a".into(),
                label: "A".into(),
            },
            Choice {
                value: "b".into(),
                label: "B".into(),
            },
        ];
        let fields = [
            field("inputStr", FieldKind::Text, true),
            field("count", FieldKind::Integer, false),
            field("ratio", FieldKind::Number, false),
            field("flag", FieldKind::Boolean, false),
            choice,
            field("data", FieldKind::Data, false),
        ];
        let errors = validate(
            &fields,
            &submitted(&[
                ("count", "x"),
                ("ratio", "NaN"),
                ("flag", "maybe"),
                ("mode", "c"),
                ("data", "ftp-ish"),
            ]),
        )
        .expect_err("invalid");
        let messages: Vec<(&str, &str)> = errors
            .iter()
            .map(|(field, messages)| (field.as_str(), messages[0].as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                ("count", "Not a valid integer."),
                ("data", "Not a valid URL."),
                ("flag", "Not a valid boolean."),
                ("inputStr", "Missing data for required field."),
                ("mode", "Must be one of: a, b."),
                ("ratio", "Not a valid number."),
            ]
        );
    }

    #[test]
    fn valid_values_are_normalised_and_unknown_fields_dropped() {
        let mut with_default = field("greeting", FieldKind::Text, false);
        with_default.default = Some("hi".into());
        let fields = [
            field("inputStr", FieldKind::Text, true),
            field("flag", FieldKind::Boolean, false),
            with_default,
        ];
        let values = validate(
            &fields,
            &submitted(&[("inputStr", "my input"), ("other", "x")]),
        )
        .expect("valid");
        assert_eq!(
            values,
            submitted(&[
                ("flag", "false"),
                ("greeting", "hi"),
                ("inputStr", "my input")
            ])
        );
    }
}

/// Property tests: any form and any submission give values or field errors,
/// never a panic; values hold every required field.
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use corral_proto::plugin::v1::FormField;
    use proptest::prelude::*;

    use super::validate;

    fn field() -> impl Strategy<Value = FormField> {
        (
            "[a-c]{1,2}",
            0..12i32,
            any::<bool>(),
            proptest::option::of("\\PC{0,8}"),
            proptest::collection::vec("\\PC{0,4}", 0..3),
        )
            .prop_map(|(name, kind, required, default, choices)| FormField {
                field: name,
                kind,
                required,
                default,
                choices: choices
                    .into_iter()
                    .map(|value| corral_proto::plugin::v1::Choice {
                        label: value.clone(),
                        value,
                    })
                    .collect(),
                ..<FormField as Default>::default()
            })
    }

    proptest! {
        #[test]
        fn any_submission_gives_values_or_errors(
            fields in proptest::collection::vec(field(), 0..6),
            submitted in proptest::collection::btree_map("[a-c]{1,2}(\\.name)?", "\\PC{0,16}", 0..8),
        ) {
            let submitted: BTreeMap<String, String> = submitted;
            match validate(&fields, &submitted) {
                Ok(values) => {
                    for field in fields.iter().filter(|field| field.required) {
                        prop_assert!(values.contains_key(&field.field), "{} missing", field.field);
                    }
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }
    }
}
