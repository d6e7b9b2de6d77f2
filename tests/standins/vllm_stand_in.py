"""A STAND-IN for `trl vllm-serve`, for tests on machines without vLLM or a GPU. It is not vLLM and generates
nothing. It takes the arguments a worker gives `trl vllm-serve` and parses them with TRL's own parser
(`trl.scripts.vllm_serve.make_parser`, so a wrong flag fails here too), prints what it was given and the
`CUDA_VISIBLE_DEVICES` it sees, writes log lines as a starting server does, starts a helper process (as vLLM starts
its engine process) and answers `GET /health` on `--host`:`--port`, the endpoint TRL's VLLMClient polls.

Its own options come first: `--stand-in-mode healthy|never-healthy|exit`, `--stand-in-startup-seconds S` (before it
listens), `--stand-in-lines N` (log lines at start), `--stand-in-pids FILE` (its pid and its helper's, as JSON).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import environ, getpid
from pathlib import Path


class Health(BaseHTTPRequestHandler):
    """GET /health: 200 (what vLLM's server answers once it serves); anything else: 404."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        print(f"INFO:     {self.address_string()} - {format % args}", file=sys.stderr, flush=True)


def main() -> None:
    own = argparse.ArgumentParser(allow_abbrev=False)
    own.add_argument("--stand-in-mode", choices=["healthy", "never-healthy", "exit"], default="healthy")
    own.add_argument("--stand-in-startup-seconds", type=float, default=0.0)
    own.add_argument("--stand-in-lines", type=int, default=3)
    own.add_argument("--stand-in-pids", type=Path)
    options, server_arguments = own.parse_known_args()

    from trl.scripts.vllm_serve import make_parser

    (served,) = make_parser(prog="trl vllm-serve (stand-in)").parse_args_and_config(server_arguments)
    print(
        f"INFO stand-in for trl vllm-serve, not vLLM: model={served.model} "
        f"tensor_parallel_size={served.tensor_parallel_size} gpu_memory_utilization={served.gpu_memory_utilization} "
        f"max_model_len={served.max_model_len} host={served.host} port={served.port}",
        flush=True,
    )
    print(f"INFO CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    if options.stand_in_pids:
        options.stand_in_pids.write_text(json.dumps({"server": getpid(), "helper": helper.pid}))
    for number in range(options.stand_in_lines):
        print(f"INFO loading the model, step {number + 1} of {options.stand_in_lines}", flush=True)
    if options.stand_in_mode == "exit":
        print("ERROR stand-in: ValueError: no GPU memory left for the KV cache", file=sys.stderr, flush=True)
        sys.exit(3)
    if options.stand_in_mode == "never-healthy":
        while True:
            print("INFO still loading (this stand-in never becomes healthy)", flush=True)
            time.sleep(0.2)
    time.sleep(options.stand_in_startup_seconds)
    server = ThreadingHTTPServer((served.host, served.port), Health)
    print(f"INFO:     Uvicorn running on http://{served.host}:{served.port} (stand-in)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
