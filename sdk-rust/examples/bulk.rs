//! A plugin that writes one output of `size` bytes (default 1 GiB), in 1 MiB
//! chunks of one shared buffer: the streaming benchmark's source. It costs the
//! plugin almost nothing, so the figures measure the gateway and its file store.

use corral_proto::bytes::Bytes;
use corral_sdk::{Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Task};

const CHUNK: usize = corral_proto::MAX_OUTPUT_CHUNK;

struct Bulk;

impl Plugin for Bulk {
    type State = ();

    fn metadata(&self) -> Metadata {
        Metadata::new("bulk", "v1.0.0", PluginType::Processing)
            .title("Bulk output")
            .description("Writes one output file of `size` bytes.")
            .input(Field::text("size", "Bytes to write (default 1 GiB)"))
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<Next<()>, Error> {
        let size: u64 = match inputs.get("size") {
            Some(size) => size.parse().map_err(|_| {
                Error::task(format!("`size` must be a number of bytes, not {size:?}"))
            })?,
            None => 1 << 30,
        };
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let mut output = task
            .output("bulk.bin", "custom/bulk", "application/octet-stream")
            .await?;
        let mut left = size;
        while left > 0 {
            let take = left.min(CHUNK as u64) as usize;
            output.write_bytes(chunk.slice(..take)).await?;
            left -= take as u64;
        }
        output.finish().await?;
        Ok(Next::Done)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(Bulk).await
}
