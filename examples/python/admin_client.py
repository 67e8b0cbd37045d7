#!/usr/bin/env python3
"""Drives a wshub node's admin API from Python, with a client generated from
proto/wshub/admin/v1/admin.proto at run time (grpcio-tools): proof that the
proto is all another language needs.

Usage: admin_client.py ADMIN_ADDR CLIENT_A CLIENT_B
CLIENT_A is subscribed to topic "py"; it is messaged, then kicked (4321).
CLIENT_B is closed by a drain. Prints one JSON object with what it saw.
Needs grpcio and grpcio-tools, in a virtual environment on Debian:
  python3 -m venv venv && venv/bin/pip install grpcio grpcio-tools
"""
import json
import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc
import importlib.resources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate(out):
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    code = protoc.main([
        "protoc", f"-I{ROOT}/proto", f"-I{well_known}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        "wshub/admin/v1/admin.proto",
    ])
    if code != 0:
        sys.exit(f"protoc failed: {code}")
    sys.path.insert(0, out)
    from wshub.admin.v1 import admin_pb2, admin_pb2_grpc
    return admin_pb2, admin_pb2_grpc


def main():
    addr, client_a, client_b = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as out:
        pb, rpc = generate(out)
        stub = rpc.AdminStub(grpc.insecure_channel(addr))
        seen = {}

        events = []
        watch = stub.WatchEvents(pb.WatchEventsRequest(kinds=[pb.EVENT_KIND_KICKED]))
        # The server sends the stream's headers once it has subscribed to the hub.
        watch.initial_metadata()

        def collect():
            try:
                for event in watch:
                    events.append(event)
            except grpc.RpcError as e:
                # Our own watch.cancel() below ends the stream: expected.
                if e.code() != grpc.StatusCode.CANCELLED:
                    raise

        watcher = threading.Thread(target=collect)
        watcher.start()

        stats = stub.GetStats(pb.GetStatsRequest())
        seen["clients"] = stats.clients
        seen["version"] = stats.version
        page = stub.ListClients(pb.ListClientsRequest(topic="py", order_by=pb.CLIENT_ORDER_QUEUE_DEPTH))
        seen["listed"] = [c.id for c in page.clients]
        seen["total"] = page.total
        seen["get_topics"] = list(stub.GetClient(pb.GetClientRequest(client_id=client_a)).topics)
        seen["recipients"] = stub.Broadcast(pb.BroadcastRequest(topic="py", data='{"from":"python"}')).recipients
        stub.SendToClient(pb.SendToClientRequest(client_id=client_a, data='"direct"'))
        try:
            stub.GetClient(pb.GetClientRequest(client_id="c-999999"))
        except grpc.RpcError as e:
            seen["not_found"] = e.code().name
        try:
            stub.Broadcast(pb.BroadcastRequest(data="{nope"))
        except grpc.RpcError as e:
            seen["invalid"] = e.code().name
        seen["kicked"] = stub.KickClients(pb.KickClientsRequest(client_id=client_a, code=4321, reason="from python")).kicked
        deadline = time.time() + 10
        while not events and time.time() < deadline:
            time.sleep(0.05)
        seen["kick_events"] = [(e.client_id, e.code) for e in events]
        watch.cancel()
        watcher.join(timeout=10)
        progress = list(stub.Drain(pb.DrainRequest(rate_per_second=50)))
        seen["drain_last"] = {"closed": progress[-1].closed, "remaining": progress[-1].remaining, "done": progress[-1].done}
        print(json.dumps(seen))


if __name__ == "__main__":
    main()
