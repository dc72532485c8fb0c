//! Micro-frontends: the HTML forms rendered from a plugin's declared inputs, with
//! the `postMessage` protocol qhana-ui speaks to the iframe it shows them in.

use std::{collections::BTreeMap, fmt::Write};

use corral_proto::plugin::v1::{Choice, FieldKind, FormField};
use serde_json::{Value, json};

use crate::error::FieldErrors;

/// What a page shows around its form.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    /// The heading.
    pub title: &'a str,
    /// Text under the heading.
    pub description: &'a str,
    /// The form's fields.
    pub fields: &'a [FormField],
    /// Values to show (query, posted values, or defaults).
    pub values: &'a BTreeMap<String, String>,
    /// Errors to show beside their fields.
    pub errors: &'a FieldErrors,
    /// Where the form is submitted (the `process/` URL).
    pub submit_url: &'a str,
    /// An HTML fragment the plugin rendered (a visualization's data).
    pub preview: Option<&'a str>,
    /// The plugins a PLUGIN field may name, offered as suggestions.
    pub plugins: &'a [PluginChoice],
}

/// A plugin a PLUGIN field can point at.
#[derive(Debug)]
pub(crate) struct PluginChoice {
    /// The plugin's metadata URL, the value the field takes.
    pub url: String,
    pub name: String,
    pub title: String,
    pub tags: Vec<String>,
}

impl PluginChoice {
    /// Whether `field` accepts this plugin: its name (when the field names one)
    /// and its tags (`!tag`: must not carry it).
    fn matches(&self, field: &FormField) -> bool {
        field
            .plugin_name
            .as_ref()
            .is_none_or(|name| *name == self.name)
            && field
                .plugin_tags
                .iter()
                .all(|tag| match tag.strip_prefix('!') {
                    Some(absent) => !self.tags.iter().any(|own| own == absent),
                    None => self.tags.iter().any(|own| own == tag),
                })
    }
}

/// Whether a form has a PLUGIN field (and so needs the plugins to choose from).
pub(crate) fn names_plugins(fields: &[FormField]) -> bool {
    fields
        .iter()
        .any(|field| field.kind == FieldKind::Plugin as i32)
}

/// Renders a complete micro-frontend page.
pub(crate) fn render(page: &Page<'_>) -> String {
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <main><h1>{title}</h1>",
        title = escape(page.title),
    );
    if !page.description.is_empty() {
        let _ = write!(
            html,
            "<p class=\"description\">{}</p>",
            escape(page.description)
        );
    }
    if let Some(preview) = page.preview {
        let _ = write!(html, "<section class=\"preview\">{preview}</section>");
    }
    let _ = write!(
        html,
        "<form method=\"post\" action=\"{}\" enctype=\"application/x-www-form-urlencoded\" \
         data-submit-url=\"{}\" novalidate>",
        escape(page.submit_url),
        escape(page.submit_url)
    );
    for field in page.fields {
        render_field(&mut html, field, page);
    }
    // Where a page opened on its own (not in qhana-ui's iframe) shows what
    // its submission did.
    html.push_str(
        "<button type=\"submit\">Submit</button></form>\
         <div id=\"form-result\" class=\"result\" role=\"status\" aria-live=\"polite\" hidden></div></main>",
    );
    let _ = write!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

fn render_field(html: &mut String, field: &FormField, page: &Page<'_>) {
    let (values, errors) = (page.values, page.errors);
    let kind = FieldKind::try_from(field.kind).unwrap_or(FieldKind::Text);
    let name = escape(&field.field);
    let label = if field.label.is_empty() {
        name.clone()
    } else {
        escape(&field.label)
    };
    let value = values
        .get(&field.field)
        .or(field.default.as_ref())
        .map(|value| escape(value))
        .unwrap_or_default();
    let required = if field.required { " required" } else { "" };
    let invalid = errors.contains_key(&field.field);
    let _ = write!(
        html,
        "<div class=\"field{}\"><label for=\"{name}\">{label}{}</label>",
        if invalid { " invalid" } else { "" },
        if field.required { " *" } else { "" }
    );
    match kind {
        FieldKind::Textarea => {
            let _ = write!(
                html,
                "<textarea id=\"{name}\" name=\"{name}\"{required}>{value}</textarea>"
            );
        }
        FieldKind::Boolean => {
            let checked = matches!(value.as_str(), "true" | "on" | "1");
            let _ = write!(
                html,
                "<input type=\"checkbox\" id=\"{name}\" name=\"{name}\" value=\"true\"{}>",
                if checked { " checked" } else { "" }
            );
        }
        FieldKind::Choice => {
            let _ = write!(html, "<select id=\"{name}\" name=\"{name}\"{required}>");
            for Choice {
                value: option,
                label,
            } in &field.choices
            {
                let option = escape(option);
                let _ = write!(
                    html,
                    "<option value=\"{option}\"{}>{}</option>",
                    if option == value { " selected" } else { "" },
                    escape(if label.is_empty() {
                        option.as_str()
                    } else {
                        label
                    })
                );
            }
            html.push_str("</select>");
        }
        FieldKind::File => {
            let _ = write!(
                html,
                "<input type=\"file\" id=\"{name}\" name=\"{name}\"{required}>"
            );
        }
        FieldKind::Data => {
            let content_types = escape(&field.data_content_types.join(" "));
            let _ = write!(
                html,
                "<input type=\"text\" id=\"{name}\" name=\"{name}\" value=\"{value}\"{required} \
                 data-input-type=\"data\" data-input=\"{}\" data-content-type=\"{content_types}\">",
                escape(&field.data_type)
            );
        }
        FieldKind::Integer | FieldKind::Number => {
            let step = if kind == FieldKind::Integer {
                "1"
            } else {
                "any"
            };
            let _ = write!(
                html,
                "<input type=\"number\" step=\"{step}\" id=\"{name}\" name=\"{name}\" value=\"{value}\"{required}>"
            );
        }
        FieldKind::Secret => {
            // Never shown back, not even after a validation error.
            let _ = write!(
                html,
                "<input type=\"password\" id=\"{name}\" name=\"{name}\" autocomplete=\"off\"{required}>"
            );
        }
        FieldKind::Plugin => {
            let _ = write!(
                html,
                "<input type=\"url\" id=\"{name}\" name=\"{name}\" value=\"{value}\" \
                 list=\"{name}-plugins\"{required} data-input-type=\"plugin\" \
                 data-plugin-name=\"{}\" data-plugin-tags=\"{}\"><datalist id=\"{name}-plugins\">",
                escape(field.plugin_name.as_deref().unwrap_or_default()),
                escape(&field.plugin_tags.join(" "))
            );
            for plugin in page.plugins.iter().filter(|plugin| plugin.matches(field)) {
                let _ = write!(
                    html,
                    "<option value=\"{}\">{}</option>",
                    escape(&plugin.url),
                    escape(&plugin.title)
                );
            }
            html.push_str("</datalist>");
        }
        FieldKind::Text | FieldKind::Unspecified => {
            let _ = write!(
                html,
                "<input type=\"text\" id=\"{name}\" name=\"{name}\" value=\"{value}\"{required}>"
            );
        }
    }
    if !field.help.is_empty() {
        let _ = write!(html, "<small>{}</small>", escape(&field.help));
    }
    for message in errors.get(&field.field).into_iter().flatten() {
        let _ = write!(html, "<p class=\"error\">{}</p>", escape(message));
    }
    html.push_str("</div>");
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A step's form as stored with the task (JSON).
pub(crate) fn encode_form(fields: &[FormField]) -> String {
    let fields: Vec<Value> = fields
        .iter()
        .map(|field| {
            json!({
                "field": field.field, "label": field.label, "help": field.help,
                "kind": field.kind, "required": field.required, "default": field.default,
                "choices": field.choices.iter()
                    .map(|choice| json!({"value": choice.value, "label": choice.label}))
                    .collect::<Vec<_>>(),
                "dataType": field.data_type, "dataContentTypes": field.data_content_types,
                "pluginName": field.plugin_name, "pluginTags": field.plugin_tags,
            })
        })
        .collect();
    Value::Array(fields).to_string()
}

/// The inverse of [`encode_form`]; a damaged form decodes as no fields.
pub(crate) fn decode_form(json: &str) -> Vec<FormField> {
    let Ok(Value::Array(fields)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    let text = |field: &Value, key: &str| field[key].as_str().unwrap_or_default().to_owned();
    let texts = |field: &Value, key: &str| -> Vec<String> {
        field[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    fields
        .iter()
        .map(|field| FormField {
            field: text(field, "field"),
            label: text(field, "label"),
            help: text(field, "help"),
            kind: field["kind"]
                .as_i64()
                .and_then(|kind| i32::try_from(kind).ok())
                .unwrap_or_default(),
            required: field["required"].as_bool().unwrap_or_default(),
            default: field["default"].as_str().map(str::to_owned),
            choices: field["choices"]
                .as_array()
                .map(|choices| {
                    choices
                        .iter()
                        .map(|choice| Choice {
                            value: text(choice, "value"),
                            label: text(choice, "label"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            data_type: text(field, "dataType"),
            data_content_types: texts(field, "dataContentTypes"),
            plugin_name: field["pluginName"].as_str().map(str::to_owned),
            plugin_tags: texts(field, "pluginTags"),
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;color:#1d1d1f;overflow-wrap:break-word}\
main{max-width:48rem}h1{font-size:1.4rem;margin:0 0 .5rem}.description{color:#555}\
.field{display:flex;flex-direction:column;margin:0 0 1rem;min-width:0}label{font-weight:600;margin-bottom:.25rem}\
input[type=text],input[type=number],input[type=password],input[type=url],textarea,select{padding:.4rem;border:1px solid #bbb;border-radius:4px;font:inherit}\
input,textarea,select{box-sizing:border-box;max-width:100%}\
textarea{min-height:6rem}small{color:#666}.invalid input,.invalid textarea,.invalid select{border-color:#c00}\
.error{color:#c00;margin:.25rem 0 0}button{padding:.5rem 1.2rem;font:inherit;cursor:pointer}\
.preview{overflow:auto;margin:0 0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}\
.result{margin:1rem 0 0;padding:.6rem .8rem;border:1px solid #ccc;border-radius:4px;background:#f7f7f7}\
.result.failed{border-color:#c00;background:#fff5f5}.result p{margin:0 0 .4rem}.result a{overflow-wrap:anywhere}\
.result ul{margin:.2rem 0 .4rem;padding-left:1.2rem}.result li{overflow-wrap:anywhere}\
.result pre{margin:.4rem 0 0;max-height:12rem;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;\
font-size:.85rem;background:#fff;border:1px solid #e5e5e5;padding:.4rem}\
.task-status{font-weight:600}.status-SUCCESS{color:#137333}.status-FAILURE{color:#c5221f}.status-PENDING{color:#b06000}";

/// The micro-frontend side of qhana-ui's `postMessage` protocol; opened on its
/// own (not in qhana-ui's iframe), the page shows the submission's result itself.
const SCRIPT: &str = r#"(function () {
  "use strict";
  var state = { preventSubmit: false };
  var standalone = window.parent === window;
  function send(message) { if (window.parent !== window) { window.parent.postMessage(message, "*"); } }
  function resize() { send({ type: "ui-resize", height: document.documentElement.scrollHeight }); }
  window.addEventListener("message", function (event) {
    var data = event.data;
    if (data === "ui-prevent-submit") { state.preventSubmit = true; }
    else if (data === "ui-allow-submit") { state.preventSubmit = false; }
    else if (data && data.type === "load-css" && Array.isArray(data.urls)) {
      data.urls.forEach(function (url) {
        var link = document.createElement("link");
        link.rel = "stylesheet"; link.href = url; document.head.appendChild(link);
      });
      resize();
    }
  });
  var form = document.querySelector("form");
  var result = document.getElementById("form-result");

  // Everything shown comes from the server: text nodes only, never markup.
  function node(name, text, className) {
    var element = document.createElement(name);
    if (text !== undefined && text !== null) { element.textContent = text; }
    if (className) { element.className = className; }
    return element;
  }
  function link(href, text, className) {
    var anchor = node("a", text, className);
    anchor.href = href;
    return anchor;
  }
  function clear(element) { while (element.firstChild) { element.removeChild(element.firstChild); } }
  function showResult(failed, children) {
    clear(result);
    children.forEach(function (child) { result.appendChild(child); });
    result.className = "result" + (failed ? " failed" : "");
    result.hidden = false;
  }
  function each(selector, action) { Array.prototype.forEach.call(form.querySelectorAll(selector), action); }
  function clearErrors() {
    each(".field .error", function (error) { error.parentNode.removeChild(error); });
    each(".field.invalid", function (field) { field.classList.remove("invalid"); });
    each("[aria-invalid]", function (input) { input.removeAttribute("aria-invalid"); });
  }
  function fieldOf(name) {
    var input = form.elements.namedItem(name);
    if (input && !input.tagName && input.length) { input = input[0]; }
    return input && input.closest ? input.closest(".field") : null;
  }
  function labelOf(field, name) {
    var label = field && field.querySelector("label");
    return label ? label.textContent.replace(/\s*\*$/, "") : name;
  }

  // A 422: `errors` by location (form, json, query), then by field.
  function showInvalid(body) {
    var locations = (body && body.errors) || {};
    var summary = node("ul");
    var count = 0;
    var first = null;
    Object.keys(locations).forEach(function (location) {
      var fields = locations[location] || {};
      Object.keys(fields).forEach(function (name) {
        var messages = [].concat(fields[name]).map(String);
        var field = fieldOf(name);
        count += 1;
        if (field) {
          field.classList.add("invalid");
          var input = field.querySelector("input, textarea, select");
          if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
          messages.forEach(function (message) { field.appendChild(node("p", message, "error")); });
        }
        summary.appendChild(node("li", labelOf(field, name) + ": " + messages.join(" ")));
      });
    });
    if (count === 0) {
      showResult(true, [node("p", "The input is not valid: " + ((body && body.message) || "no details"))]);
      return;
    }
    showResult(true, [node("p", count === 1 ? "The input is not valid (1 field):" : "The input is not valid (" + count + " fields):"), summary]);
    if (first) { first.focus(); }
  }

  function showTask(view, task) {
    view.status.textContent = task.status;
    view.status.className = "task-status status-" + task.status;
    var lines = String(task.log || "").split("\n").filter(function (line) { return line !== ""; });
    view.log.textContent = lines.slice(-10).join("\n");
    view.log.hidden = lines.length === 0;
    clear(view.more);
    var waiting = (task.steps || []).filter(function (step) { return !step.cleared; });
    if (task.status === "PENDING" && waiting.length > 0 && waiting[0].uiHref) {
      var step = node("p", "It waits for a step: ");
      step.appendChild(link(waiting[0].uiHref, "open its form", "step-link"));
      view.more.appendChild(step);
    }
    if ((task.outputs || []).length > 0) {
      var outputs = node("ul", null, "task-outputs");
      task.outputs.forEach(function (output) {
        var item = node("li");
        item.appendChild(link(output.href, output.name || output.dataType || "output"));
        if (output.contentType) { item.appendChild(document.createTextNode(" (" + output.contentType + ")")); }
        outputs.appendChild(item);
      });
      view.more.appendChild(node("p", "Outputs:"));
      view.more.appendChild(outputs);
    }
  }

  // The task's JSON every second until it is no longer PENDING.
  function follow(taskUrl, view) {
    fetch(taskUrl, { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status + " " + response.statusText); }
        return response.json();
      })
      .then(function (task) {
        showTask(view, task);
        if (task.status === "PENDING") { setTimeout(function () { follow(taskUrl, view); }, 1000); }
      })
      .catch(function (error) {
        view.status.textContent = "unknown (could not read the task: " + error.message + ")";
        view.status.className = "task-status";
      });
  }

  function started(taskUrl, task, isStep) {
    var title = node("p", isStep ? "Step submitted, task: " : "Task started: ");
    title.appendChild(link(taskUrl, taskUrl, "task-link"));
    var line = node("p", "Status: ");
    var view = { status: node("span", "…", "task-status"), log: node("pre", "", "task-log"), more: node("div") };
    view.log.hidden = true;
    line.appendChild(view.status);
    showResult(false, [title, line, view.log, view.more]);
    if (task && typeof task.status === "string") {
      showTask(view, task);
      if (task.status === "PENDING") { setTimeout(function () { follow(taskUrl, view); }, 1000); }
    } else {
      follow(taskUrl, view);
    }
  }

  function submitHere(submitUrl, formData) {
    var button = form.querySelector("button[type=submit]");
    var isStep = /-process\/?$/.test(new URL(submitUrl).pathname);
    clearErrors();
    if (button) { button.disabled = true; }
    showResult(false, [node("p", "Submitting…")]);
    fetch(submitUrl, { method: "POST", body: formData, redirect: "follow" })
      .then(function (response) {
        return response.text().then(function (text) {
          var body = null;
          try { body = JSON.parse(text); } catch (error) { body = null; }
          if (response.ok) { started(response.url, body, isStep); return; }
          if (response.status === 422) { showInvalid(body); return; }
          var detail = (body && body.message) || text || response.statusText;
          showResult(true, [node("p", "Could not submit (" + response.status + "): " + detail)]);
        });
      })
      .catch(function (error) { showResult(true, [node("p", "Could not submit: " + error.message)]); })
      .then(function () { if (button) { button.disabled = false; } });
  }

  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var submitUrl = new URL(form.dataset.submitUrl, window.location.href).href;
      var hasFiles = form.querySelector("input[type=file]") !== null;
      var formData = hasFiles ? new FormData(form) : new URLSearchParams(new FormData(form));
      if (standalone && result) { submitHere(submitUrl, formData); return; }
      var dataInputs = Array.prototype.map.call(
        form.querySelectorAll("[data-input-type=data]"), function (input) { return input.name; });
      var message = { type: "form-submit", formData: hasFiles ? null : formData.toString(),
        formDataType: "application/x-www-form-urlencoded", dataInputs: dataInputs, submitUrl: submitUrl };
      if (state.preventSubmit) { send(message); return; }
      fetch(submitUrl, { method: "POST", body: formData, redirect: "follow" })
        .then(function (response) {
          if (response.ok) { message.resultUrl = response.url; send(message); return; }
          return response.text().then(function (text) {
            send({ type: "form-error", status: response.status, error: text });
          });
        })
        .catch(function (error) { send({ type: "form-error", status: 0, error: String(error) }); });
    });
  }
  if (window.ResizeObserver) { new ResizeObserver(resize).observe(document.body); }
  window.addEventListener("load", function () { send("ui-loaded"); resize(); });
})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: FieldKind) -> FormField {
        FormField {
            field: name.into(),
            label: "Label".into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_is_never_shown_back_and_a_plugin_field_offers_the_matching_plugins() {
        let mut executor = field("executor", FieldKind::Plugin);
        executor.plugin_tags = vec!["circuit-executor".into(), "!deprecated".into()];
        let fields = [field("token", FieldKind::Secret), executor];
        let values = BTreeMap::from([("token".to_string(), "s3cr3t".to_string())]);
        let plugin = |name: &str, tags: &[&str]| PluginChoice {
            url: format!("http://corral/plugins/{name}@v1/"),
            name: name.into(),
            title: name.into(),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
        };
        let plugins = [
            plugin("qiskit-simulator", &["circuit-executor", "qasm-2"]),
            plugin("old-simulator", &["circuit-executor", "deprecated"]),
            plugin("hello-world", &[]),
        ];
        let html = render(&Page {
            title: "Demo",
            description: "",
            fields: &fields,
            values: &values,
            errors: &FieldErrors::new(),
            submit_url: "/plugins/demo@v1/process/",
            preview: None,
            plugins: &plugins,
        });
        assert!(!html.contains("s3cr3t"), "{html}");
        assert!(html.contains(
            "<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\">"
        ));
        assert!(html.contains("data-input-type=\"plugin\" data-plugin-name=\"\" data-plugin-tags=\"circuit-executor !deprecated\""));
        assert!(html.contains("<option value=\"http://corral/plugins/qiskit-simulator@v1/\">"));
        assert!(
            !html.contains("old-simulator") && !html.contains("hello-world"),
            "{html}"
        );
    }

    #[test]
    fn forms_escape_values_and_mark_data_inputs() {
        let mut data = field("data", FieldKind::Data);
        data.data_type = "entity/list".into();
        data.data_content_types = vec!["text/csv".into(), "application/json".into()];
        let fields = [field("inputStr", FieldKind::Text), data];
        let values = BTreeMap::from([("inputStr".to_string(), "<b>\"x\"".to_string())]);
        let mut errors = FieldErrors::new();
        errors.insert(
            "data".into(),
            vec!["Missing data for required field.".into()],
        );
        let html = render(&Page {
            title: "Demo",
            description: "",
            fields: &fields,
            values: &values,
            errors: &errors,
            submit_url: "/plugins/demo@v1/process/",
            preview: None,
            plugins: &[],
        });
        assert!(html.contains("value=\"&lt;b&gt;&quot;x&quot;\""), "{html}");
        assert!(html.contains(
            "data-input-type=\"data\" data-input=\"entity/list\" data-content-type=\"text/csv application/json\""
        ));
        assert!(html.contains("<p class=\"error\">Missing data for required field.</p>"));
        assert!(html.contains("ui-loaded") && html.contains("form-submit"));
    }

    #[test]
    fn step_forms_survive_storage() {
        let mut text = field("inputStr", FieldKind::Text);
        text.default = Some("Input from preprocessing: x".into());
        text.required = true;
        let decoded = decode_form(&encode_form(std::slice::from_ref(&text)));
        assert_eq!(decoded, vec![text]);
        assert!(decode_form("not json").is_empty());
    }
}
