"""The distributed chief: serves a TinyNASOracle over KerasTuner's gRPC service until the search
is over, expiring the leases of silent workers once a second.

KerasTuner's own server loop polls for its end every 20 s and never looks at leases; this one
uses the same servicer (keras_tuner's OracleServicer), so workers are stock KerasTuner clients.
"""
from __future__ import annotations

import os
import time
from concurrent import futures

from tinyengine_tf.errors import TinyEngineError


def serve(oracle, verbose: int = 1, poll_seconds: float = 0.5) -> None:
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    ip, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
    # One handler thread, as KerasTuner's: the oracle's methods are synchronized anyway.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(OracleServicer(oracle), server)
    if server.add_insecure_port(f"{ip}:{port}") == 0:
        raise TinyEngineError(f"the TinyNAS chief cannot listen on {ip}:{port} (in use?): set "
                              "KERASTUNER_ORACLE_PORT to a free port")
    server.start()
    if verbose:
        print(f"[tinynas] chief serving on {ip}:{port}", flush=True)
    try:
        while not oracle.search_over():
            time.sleep(poll_seconds)
            oracle.expire_leases()
    finally:
        server.stop(grace=2)
    if verbose:
        print("[tinynas] chief: search over", flush=True)
