"""Writes KMS requests exactly as botocore signs them, for kmsd's SigV4
verifier tests (src/http/sigv4/tests.rs). Not run by the tests: its output
is committed beside it. Regenerate with `python3 generate.py` (botocore
installed; the files record the version used).

botocore's clock is frozen, the client's endpoint is a loopback URL (the
request never leaves the process: a `before-send` handler records it and
answers), and the Host header is the one urllib3 would send for that URL
(botocore signs the host from the URL, as `host:port` when the port is not
the scheme's default).
"""
import datetime
import json
import os

import botocore
import botocore.auth
import botocore.session
from botocore.awsrequest import AWSResponse

ACCESS_KEY_ID = "AKIAKMSDTESTEXAMPLE"
SECRET = "kmsdTestSecret/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "eu-west-3"
ENDPOINT = "http://127.0.0.1:4599"
TIMESTAMP = datetime.datetime(2026, 3, 14, 15, 9, 26)

botocore.auth.get_current_datetime = lambda *a, **k: TIMESTAMP

client = botocore.session.get_session().create_client(
    "kms",
    region_name=REGION,
    endpoint_url=ENDPOINT,
    aws_access_key_id=ACCESS_KEY_ID,
    aws_secret_access_key=SECRET,
)
captured = []


class _Body:
    def stream(self, **_):
        return iter([b"{}"])


def before_send(request, **_):
    captured.append(request)
    return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, _Body())


client.meta.events.register("before-send.kms.*", before_send)

calls = {
    "encrypt": lambda: client.encrypt(
        KeyId="alias/kmsd-test",
        Plaintext=b"hello kmsd",
        EncryptionContext={"purpose": "sigv4 test"},
    ),
    "list-keys": lambda: client.list_keys(),
}
here = os.path.dirname(os.path.abspath(__file__))
for name, call in calls.items():
    captured.clear()
    try:
        call()
    except Exception:  # the canned answer need not parse
        pass
    (request,) = captured
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{request.method} / HTTP/1.1", "Host: 127.0.0.1:4599"]
    for k, v in request.headers.items():
        lines.append(f"{k}: {v.decode() if isinstance(v, bytes) else v}")
    with open(os.path.join(here, f"{name}.http"), "wb") as f:
        f.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
with open(os.path.join(here, "context.json"), "w") as f:
    json.dump(
        {
            "botocore": botocore.__version__,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET,
            "region": REGION,
            "service": "kms",
            "timestamp": TIMESTAMP.strftime("%Y%m%dT%H%M%SZ"),
        },
        f,
        indent=1,
    )
    f.write("\n")
