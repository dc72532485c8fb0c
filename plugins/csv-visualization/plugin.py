"""csv-visualization v0.1.0: shows CSV data as a table.

A Corral plugin written with nothing but grpcio and the .proto files: it serves
corral.plugin.v1.Plugin, grpc.health.v1.Health and reflection on loopback, then
registers with the supervisor named in CORRAL_REGISTRY.
"""
import csv
import html
import io
import os
import signal
import sys
import threading
import urllib.request
from concurrent import futures

PROTO_PATH = os.path.abspath(os.environ.get("PROTO_PATH", "../../proto/proto"))
sys.path.append(PROTO_PATH)

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection  # noqa: E402

plugin_pb2, plugin_grpc = grpc.protos_and_services("corral/plugin/v1/plugin.proto")
supervisor_pb2, supervisor_grpc = grpc.protos_and_services("corral/supervisor/v1/supervisor.proto")

# The plugin protocol this file speaks: a step ends the call (it asks for none).
PROTOCOL_VERSION = 2
MAX_CHUNK = 1024 * 1024
MAX_DATA = 64 * 1024 * 1024
MAX_ROWS = 10_000


def metadata():
    return plugin_pb2.PluginMetadata(
        name="csv-visualization",
        version="v0.1.0",
        title="CSV visualization",
        description="Shows CSV data as a table.",
        type=plugin_pb2.PLUGIN_TYPE_VISUALIZATION,
        tags=["visualization", "csv"],
        data_inputs=[plugin_pb2.DataInput(data_type="*", content_types=["text/csv"], required=True, parameter="data")],
        data_outputs=[plugin_pb2.DataOutput(data_type="custom/visualization", content_types=["text/html"], name="table.html")],
        inputs=[plugin_pb2.FormField(
            field="data", label="CSV data", kind=plugin_pb2.FIELD_KIND_DATA, required=True,
            data_type="*", data_content_types=["text/csv"])],
    )


class TaskError(Exception):
    pass


def read_data(url):
    scheme = url.split(":", 1)[0].lower()
    if scheme == "file":
        if os.environ.get("CORRAL_ALLOW_FILE_URLS") != "1":
            raise TaskError("file:// data URLs are not allowed for this plugin")
        if not url.startswith("file://localhost/"):
            raise TaskError("only file://localhost/... URLs can be read")
    elif scheme not in ("http", "https", "data"):
        raise TaskError(f"unsupported data URL scheme {scheme!r}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read(MAX_DATA + 1)
    except Exception as error:  # urllib raises many kinds
        raise TaskError(f"failed to read the data: {error}") from error
    if len(body) > MAX_DATA:
        raise TaskError(f"the data is larger than {MAX_DATA} bytes")
    return body


def table(url):
    text = read_data(url).decode("utf-8", errors="replace")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise TaskError(f"the data is not valid CSV: {error}") from error
    if not rows:
        return '<table class="csv-table"></table>'
    out = ['<table class="csv-table"><thead><tr>']
    out += [f"<th>{html.escape(cell)}</th>" for cell in rows[0]]
    out.append("</tr></thead><tbody>")
    for row in rows[1 : MAX_ROWS + 1]:
        out.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    if len(rows) - 1 > MAX_ROWS:
        out.append(f"<p>{len(rows) - 1 - MAX_ROWS} more rows not shown.</p>")
    return "".join(out)


class CsvVisualization(plugin_grpc.PluginServicer):
    def GetMetadata(self, request, context):
        return metadata()

    def Invoke(self, request, context):
        if not request.task_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id must not be empty")
        url = request.inputs.get("data")
        if not url:
            yield plugin_pb2.InvokeEvent(error=plugin_pb2.TaskError(message="missing input `data`"))
            return
        try:
            page = table(url).encode("utf-8")
        except Exception as error:  # every failure ends the task with its reason
            yield plugin_pb2.InvokeEvent(error=plugin_pb2.TaskError(message=str(error)))
            return
        yield plugin_pb2.InvokeEvent(output_begin=plugin_pb2.OutputBegin(
            name="table.html", data_type="custom/visualization", content_type="text/html"))
        for start in range(0, len(page), MAX_CHUNK):
            yield plugin_pb2.InvokeEvent(output_chunk=plugin_pb2.OutputChunk(data=page[start:start + MAX_CHUNK]))
        yield plugin_pb2.InvokeEvent(output_end=plugin_pb2.OutputEnd())
        yield plugin_pb2.InvokeEvent(result=plugin_pb2.TaskResult())

    def Render(self, request, context):
        url = request.inputs.get("data")
        if not url:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing input `data`")
        try:
            return plugin_pb2.RenderResponse(html=table(url))
        except Exception as error:  # answered as a status, never an UNKNOWN
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


def main():
    # Health checks share this pool: keep it larger than the expected parallel tasks.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    plugin_grpc.add_PluginServicer_to_server(CsvVisualization(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (
        plugin_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(services, server)
    port = server.add_insecure_port(os.environ.get("CORRAL_PLUGIN_LISTEN", "127.0.0.1:0"))
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    address = f"{os.environ.get('CORRAL_PLUGIN_HOST', '127.0.0.1')}:{port}"
    print(f"csv-visualization@v0-1-0 serving gRPC on {address}", flush=True)

    registry = os.environ.get("CORRAL_REGISTRY")
    if registry:
        target = registry.removeprefix("http://")
        with grpc.insecure_channel(target) as channel:
            supervisor_grpc.RegistryStub(channel).Register(
                supervisor_pb2.RegisterRequest(
                    token=os.environ["CORRAL_PLUGIN_TOKEN"],
                    protocol_version=PROTOCOL_VERSION,
                    address=address,
                    metadata=metadata(),
                ),
                timeout=10,
            )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    print("csv-visualization@v0-1-0 shutting down", flush=True)
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=3).wait()


if __name__ == "__main__":
    main()
