//! json-visualization v0.1.0: shows JSON data as a collapsible tree.

use std::fmt::Write;

use corral_sdk::{
    DataInput, DataOutput, Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Task,
};
use serde_json::Value;

struct JsonVisualization;

impl JsonVisualization {
    async fn tree(&self, inputs: &Inputs) -> Result<String, Error> {
        let bytes = corral_sdk::read_data(inputs.require("data")?).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|error| Error::task(format!("the data is not JSON: {error}")))?;
        let mut html = String::from("<div class=\"json-tree\">");
        render(&value, &mut html);
        html.push_str("</div>");
        Ok(html)
    }
}

impl Plugin for JsonVisualization {
    type State = ();

    fn metadata(&self) -> Metadata {
        Metadata::new("json-visualization", "v0.1.0", PluginType::Visualization)
            .title("JSON visualization")
            .description("Shows JSON data as a tree.")
            .tags(["visualization", "json"])
            .data_input(DataInput::new("*", ["application/json"], "data").required())
            .input(Field::data("data", "JSON data", "*", ["application/json"]).required())
            .data_output(DataOutput::new("custom/visualization", ["text/html"]).name("tree.html"))
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<Next<()>, Error> {
        let html = self.tree(&inputs).await?;
        task.output_bytes("tree.html", "custom/visualization", "text/html", html)
            .await?;
        Ok(Next::Done)
    }

    async fn render(&self, inputs: Inputs) -> Result<String, Error> {
        self.tree(&inputs).await
    }
}

fn render(value: &Value, html: &mut String) {
    match value {
        Value::Object(map) => {
            let _ = write!(
                html,
                "<details open><summary>{{{}}}</summary><ul>",
                map.len()
            );
            for (key, value) in map {
                let _ = write!(html, "<li><span class=\"key\">{}</span>: ", escape(key));
                render(value, html);
                html.push_str("</li>");
            }
            html.push_str("</ul></details>");
        }
        Value::Array(items) => {
            let _ = write!(
                html,
                "<details open><summary>[{}]</summary><ol start=\"0\">",
                items.len()
            );
            for item in items {
                html.push_str("<li>");
                render(item, html);
                html.push_str("</li>");
            }
            html.push_str("</ol></details>");
        }
        scalar => {
            let _ = write!(
                html,
                "<span class=\"value\">{}</span>",
                escape(&scalar.to_string())
            );
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(JsonVisualization).await
}
