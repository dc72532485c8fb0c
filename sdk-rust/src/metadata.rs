//! What a plugin says about itself: QHAna metadata and its input form.

use corral_proto::plugin::v1 as pb;

/// The kind of plugin, as QHAna names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginType {
    /// Computes outputs from inputs.
    Processing,
    /// Shows data.
    Visualization,
    /// Turns data of one type into another.
    Conversion,
    /// Brings data in.
    Dataloader,
    /// Talks with the user.
    Interaction,
}

/// A plugin's metadata, built with chained calls.
///
/// ```
/// use corral_sdk::{DataOutput, Field, Metadata, PluginType};
/// let metadata = Metadata::new("hello-world", "v0.2.1", PluginType::Processing)
///     .title("Hello World")
///     .tags(["hello-world", "demo"])
///     .input(Field::text("inputStr", "Input string").required())
///     .data_output(DataOutput::new("custom/hello-world-output", ["text/plain"]).required());
/// assert_eq!(metadata.identifier(), "hello-world@v0-2-1");
/// ```
#[derive(Debug, Clone)]
pub struct Metadata {
    inner: pb::PluginMetadata,
}

impl Metadata {
    /// A plugin named `name` (e.g. `hello-world`) at `version` (e.g. `v0.2.1`).
    pub fn new(name: impl Into<String>, version: impl Into<String>, kind: PluginType) -> Self {
        let name = name.into();
        Self {
            inner: pb::PluginMetadata {
                title: name.clone(),
                name,
                version: version.into(),
                r#type: plugin_type(kind).into(),
                ..Default::default()
            },
        }
    }

    /// The human title (defaults to the name).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.inner.title = title.into();
        self
    }

    /// A description of what the plugin does.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.inner.description = description.into();
        self
    }

    /// Tags for search.
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.inner.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// A link of the given type.
    pub fn link(mut self, kind: impl Into<String>, href: impl Into<String>) -> Self {
        self.inner.links.push(pb::Link {
            r#type: kind.into(),
            href: href.into(),
        });
        self
    }

    /// A field of the `process/` form.
    pub fn input(mut self, field: Field) -> Self {
        self.inner.inputs.push(field.inner);
        self
    }

    /// A data input, received as a URL in the form field `parameter`.
    pub fn data_input(mut self, input: DataInput) -> Self {
        self.inner.data_inputs.push(input.inner);
        self
    }

    /// A data output the plugin produces.
    pub fn data_output(mut self, output: DataOutput) -> Self {
        self.inner.data_outputs.push(output.inner);
        self
    }

    /// A plugin this one calls, received as a URL in the form field `parameter`.
    pub fn plugin_dependency(mut self, dependency: pb::PluginDependency) -> Self {
        self.inner.plugin_dependencies.push(dependency);
        self
    }

    /// The QHAna identifier: `hello-world@v0-2-1`.
    pub fn identifier(&self) -> String {
        format!(
            "{}@{}",
            self.inner.name.replace('.', "-"),
            self.inner.version.replace('.', "-")
        )
    }

    /// The protobuf message sent to the supervisor and the gateway.
    pub fn to_proto(&self) -> pb::PluginMetadata {
        self.inner.clone()
    }
}

/// One field of a form.
#[derive(Debug, Clone)]
pub struct Field {
    inner: pb::FormField,
}

impl Field {
    fn new(field: impl Into<String>, label: impl Into<String>, kind: pb::FieldKind) -> Self {
        Self {
            inner: pb::FormField {
                field: field.into(),
                label: label.into(),
                kind: kind.into(),
                ..Default::default()
            },
        }
    }

    /// A single line of text.
    pub fn text(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::Text)
    }

    /// Several lines of text.
    pub fn textarea(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::Textarea)
    }

    /// A whole number.
    pub fn integer(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::Integer)
    }

    /// A number.
    pub fn number(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::Number)
    }

    /// A checkbox.
    pub fn boolean(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::Boolean)
    }

    /// One of `choices`, given as `(value, label)`.
    pub fn choice<V: Into<String>, L: Into<String>>(
        field: impl Into<String>,
        label: impl Into<String>,
        choices: impl IntoIterator<Item = (V, L)>,
    ) -> Self {
        let mut this = Self::new(field, label, pb::FieldKind::Choice);
        this.inner.choices = choices
            .into_iter()
            .map(|(value, label)| pb::Choice {
                value: value.into(),
                label: label.into(),
            })
            .collect();
        this
    }

    /// An uploaded file; the plugin receives a URL to read with
    /// [`Task::read_data`](crate::Task::read_data).
    pub fn file(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::File)
    }

    /// The URL of a data item of `data_type` in one of `content_types`.
    pub fn data<T: Into<String>>(
        field: impl Into<String>,
        label: impl Into<String>,
        data_type: impl Into<String>,
        content_types: impl IntoIterator<Item = T>,
    ) -> Self {
        let mut this = Self::new(field, label, pb::FieldKind::Data);
        this.inner.data_type = data_type.into();
        this.inner.data_content_types = content_types.into_iter().map(Into::into).collect();
        this
    }

    /// A value the user keeps to themselves (a password, an API token): the
    /// gateway never shows it back in a form or an API answer. Keep it out of
    /// the task's log yourself.
    pub fn secret(field: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(field, label, pb::FieldKind::Secret)
    }

    /// The URL of another plugin, among those named `name` (when given) that
    /// carry every one of `tags` (`"!tag"`: does not carry it).
    pub fn plugin<T: Into<String>>(
        field: impl Into<String>,
        label: impl Into<String>,
        name: Option<&str>,
        tags: impl IntoIterator<Item = T>,
    ) -> Self {
        let mut this = Self::new(field, label, pb::FieldKind::Plugin);
        this.inner.plugin_name = name.map(str::to_owned);
        this.inner.plugin_tags = tags.into_iter().map(Into::into).collect();
        this
    }

    /// The field must have a value.
    pub fn required(mut self) -> Self {
        self.inner.required = true;
        self
    }

    /// Help text shown with the field.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.inner.help = help.into();
        self
    }

    /// The value the form starts with.
    pub fn default_value(mut self, value: impl Into<String>) -> Self {
        self.inner.default = Some(value.into());
        self
    }

    pub(crate) fn into_proto(self) -> pb::FormField {
        self.inner
    }
}

/// A data input of the plugin.
#[derive(Debug, Clone)]
pub struct DataInput {
    inner: pb::DataInput,
}

impl DataInput {
    /// Data of `data_type` in one of `content_types`, received in the form field
    /// `parameter`.
    pub fn new<T: Into<String>>(
        data_type: impl Into<String>,
        content_types: impl IntoIterator<Item = T>,
        parameter: impl Into<String>,
    ) -> Self {
        Self {
            inner: pb::DataInput {
                data_type: data_type.into(),
                content_types: content_types.into_iter().map(Into::into).collect(),
                required: false,
                parameter: parameter.into(),
            },
        }
    }

    /// The input must be given.
    pub fn required(mut self) -> Self {
        self.inner.required = true;
        self
    }
}

/// A data output of the plugin.
#[derive(Debug, Clone)]
pub struct DataOutput {
    inner: pb::DataOutput,
}

impl DataOutput {
    /// Data of `data_type` in one of `content_types`.
    pub fn new<T: Into<String>>(
        data_type: impl Into<String>,
        content_types: impl IntoIterator<Item = T>,
    ) -> Self {
        Self {
            inner: pb::DataOutput {
                data_type: data_type.into(),
                content_types: content_types.into_iter().map(Into::into).collect(),
                required: false,
                name: None,
            },
        }
    }

    /// Always produced.
    pub fn required(mut self) -> Self {
        self.inner.required = true;
        self
    }

    /// The output's file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.inner.name = Some(name.into());
        self
    }
}

fn plugin_type(kind: PluginType) -> pb::PluginType {
    match kind {
        PluginType::Processing => pb::PluginType::Processing,
        PluginType::Visualization => pb::PluginType::Visualization,
        PluginType::Conversion => pb::PluginType::Conversion,
        PluginType::Dataloader => pb::PluginType::Dataloader,
        PluginType::Interaction => pb::PluginType::Interaction,
    }
}
