//! file-upload v0.2.0: the uploaded file becomes the task's one output.

use corral_sdk::{Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Task};

struct FileUpload;

impl Plugin for FileUpload {
    type State = ();

    fn metadata(&self) -> Metadata {
        Metadata::new("file-upload", "v0.2.0", PluginType::Dataloader)
            .title("File upload")
            .description("Uploads a file as data, with the data type and content type you give.")
            .tags(["data-loading", "file-upload"])
            .input(Field::file("file", "File").required())
            .input(
                Field::text("dataType", "Data type")
                    .help("The data type of the file, e.g. entity/list.")
                    .required(),
            )
            .input(
                Field::text("contentType", "Content type")
                    .help("The content type of the file, e.g. text/csv.")
                    .required(),
            )
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<Next<()>, Error> {
        let bytes = task.read_data(inputs.require("file")?).await?;
        // The gateway passes an upload's original name in `<field>.name`.
        let name = inputs
            .get("file.name")
            .filter(|name| !name.is_empty())
            .unwrap_or("upload");
        let data_type = inputs.require("dataType")?;
        let content_type = inputs.require("contentType")?;
        task.output_bytes(name, data_type, content_type, bytes)
            .await?;
        Ok(Next::Done)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(FileUpload).await
}
