"Helpers shared by the tests that start loopback servers."
import socket

def free_port() -> int:
    "A free TCP port on 127.0.0.1 (for servers started in a subprocess, which must be told their port)."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
