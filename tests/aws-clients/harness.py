"""The real kmsd behind its loopback TCP listener, for AWS's own clients.

`Kmsd` starts `kmsd serve` (the binary `KMSD_BIN` names, by default
target/debug/kmsd) in a temporary directory of its own: a config that
turns on the TCP listener on a free port, one 0600 secret file per
credential, the data directory and the log. It waits until the port accepts
a connection and stops the daemon (SIGTERM, then SIGKILL after 15 s) and
removes the directory when the test class ends, failed or not; the daemon
also gets SIGKILL if the test process dies first (PR_SET_PDEATHSIG).

`KmsdTestCase` gives each test class one daemon (`cls.kmsd`) and an admin's
boto3 client (`cls.kms`); `Kmsd.client` makes others (another credential,
a wrong secret, another region), `Kmsd.aws` runs the AWS CLI, and
`Kmsd.signed_call` sends a request signed by botocore's SigV4 signer
through http.client (for kmsd's own operations, which boto3's model does
not have, and for requests a client would not send).

Nothing here reads the caller's AWS configuration: importing this module
drops every `AWS_*` variable and points the config and credentials files
at /dev/null, so the clients run with botocore's defaults whatever the
machine has.
"""

import ctypes
import datetime
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials

REPO = Path(__file__).resolve().parents[2]
KMSD_BIN = Path(os.environ.get("KMSD_BIN", REPO / "target" / "debug" / "kmsd"))
REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
START_TIMEOUT = 20.0
STOP_GRACE = 15.0

# Isolation from the machine's AWS setup (profiles, endpoints, retry
# settings, CA bundles) and from proxies: the clients see botocore's
# defaults and talk to 127.0.0.1 directly.
for _name in [n for n in os.environ if n.startswith("AWS_")]:
    del os.environ[_name]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(
        p for p in (os.environ.get(_name), "127.0.0.1", "localhost") if p
    )


@dataclass(frozen=True)
class Credential:
    """An access key the daemon's config maps to a principal."""

    access_key_id: str
    secret: str
    principal: str
    uid: int


def _other_uid() -> int:
    """A uid that is neither the daemon's nor root: an ordinary caller."""
    uid = 61000
    while uid in (0, os.getuid()):
        uid += 1
    return uid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class Kmsd:
    """One kmsd process with the TCP listener on and three credentials:

    - `admin`: `uid:<the daemon's uid>`, an administrator (docs/access.md:
      the daemon's own uid always is), who creates and manages the keys;
    - `other`: `uid:61000` (or the next uid that is neither root nor the
      daemon's), a caller with no rights on anybody's key;
    - `named`: the daemon's user by name (`user:<name>`), for the
      principal's other form.
    """

    def __init__(self) -> None:
        if not KMSD_BIN.is_file():
            raise unittest.SkipTest(f"no kmsd binary at {KMSD_BIN} (set KMSD_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="kmsd-aws-clients-"))
        self.process = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        uid = os.getuid()
        self.admin = Credential("AKIDKMSDTEST", self._secret(), f"uid:{uid}", uid)
        other = _other_uid()
        self.other = Credential("AKIDKMSDOTHER", self._secret(), f"uid:{other}", other)
        name = pwd.getpwuid(uid).pw_name
        self.named = Credential("AKIDKMSDNAMED", self._secret(), f"user:{name}", uid)
        self.credentials = [self.admin, self.other, self.named]
        for c in self.credentials:
            self._write_secret(c)
        # A port taken between _free_port and the daemon's bind (another
        # process on the machine) fails the start: try again with another.
        for attempt in range(3):
            self.port = _free_port()
            self._write_config()
            if self._spawn():
                return
            if "in use" not in self.log() or attempt == 2:
                raise RuntimeError(f"kmsd did not start; log:\n{self.log()}")

    @staticmethod
    def _secret() -> str:
        return uuid.uuid4().hex + uuid.uuid4().hex

    def _write_secret(self, c: Credential) -> None:
        path = self.secret_path(c)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            # One trailing newline, as `echo secret > file` writes: kmsd
            # trims it.
            f.write(c.secret + "\n")

    def secret_path(self, c: Credential) -> Path:
        return self.dir / f"secret-{c.access_key_id}"

    @property
    def config_path(self) -> Path:
        return self.dir / "kmsd.toml"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        lines = [
            "[aws]",
            f'region = "{REGION}"',
            f'account_id = "{ACCOUNT_ID}"',
            "",
            "[http]",
            f'tcp = "127.0.0.1:{self.port}"',
        ]
        for c in self.credentials:
            lines += [
                "",
                "[[http.credentials]]",
                f'access_key_id = "{c.access_key_id}"',
                f"secret_file = {json.dumps(str(self.secret_path(c)))}",
                f'principal = "{c.principal}"',
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _spawn(self) -> bool:
        """Starts kmsd; True once the port accepts, False if kmsd exited."""
        with open(self.dir / "kmsd.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(KMSD_BIN),
                    "serve",
                    "--socket",
                    str(self.dir / "kmsd.sock"),
                    "--data-dir",
                    str(self.dir / "data"),
                    "--config",
                    str(self.config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(
            f"kmsd did not accept connections on {self.endpoint} within "
            f"{START_TIMEOUT} s; log:\n{self.log()}"
        )

    def log(self) -> str:
        try:
            return (self.dir / "kmsd.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stops kmsd and removes the directory. Raises if kmsd had died or
        did not exit cleanly on SIGTERM (a crash fails the test class)."""
        try:
            if self.process is not None:
                p, self.process = self.process, None
                died = p.poll()
                if died is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        code = p.wait(STOP_GRACE)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
                        raise RuntimeError(
                            f"kmsd did not stop within {STOP_GRACE} s of SIGTERM; "
                            f"log:\n{self.log()}"
                        )
                    if code != 0:
                        raise RuntimeError(
                            f"kmsd exited with {code} on SIGTERM; log:\n{self.log()}"
                        )
                else:
                    raise RuntimeError(
                        f"kmsd died during the tests ({died}); log:\n{self.log()}"
                    )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ clients

    def client(
        self, credential=None, *, region=REGION, secret=None, session_token=None, **config
    ):
        """A boto3 KMS client of `credential` (the admin by default; with
        `secret` instead of its own if given) at the daemon's endpoint for
        `region`; `config` goes to botocore's Config. Retries are botocore's
        defaults; the timeouts are shortened so that a hung daemon fails a
        test in seconds, not minutes."""
        c = credential or self.admin
        options = {"connect_timeout": 5, "read_timeout": 30}
        options.update(config)
        return boto3.session.Session().client(
            "kms",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=c.access_key_id,
            aws_secret_access_key=secret if secret is not None else c.secret,
            aws_session_token=session_token,
            config=botocore.config.Config(**options),
        )

    def signed_call(
        self,
        operation,
        body,
        credential=None,
        *,
        region=REGION,
        when=None,
        tamper=None,
    ):
        """POSTs `TrentService.<operation>` with `body` (a dict), signed with
        botocore's SigV4Auth as `credential` for `region`, at `when` (a UTC
        datetime; now by default). `tamper(headers, body) -> body` may
        change the request after signing. Returns (status, parsed JSON)."""
        c = credential or self.admin
        data = json.dumps(body).encode()
        request = botocore.awsrequest.AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=data,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"TrentService.{operation}",
            },
        )
        signer = botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(c.access_key_id, c.secret), "kms", region
        )
        if when is None:
            signer.add_auth(request)
        else:
            with clock_at(when):
                signer.add_auth(request)
        headers = dict(request.headers.items())
        if tamper is not None:
            data = tamper(headers, data)
        headers["Content-Length"] = str(len(data))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/", body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw) if raw else {}

    def aws(
        self, *args, credential=None, secret=None, region=REGION, env=None, check=True
    ):
        """Runs the AWS CLI (`aws --endpoint-url <kmsd> ARGS`) with only the
        environment it needs: the credential in AWS_ACCESS_KEY_ID and
        AWS_SECRET_ACCESS_KEY, the region in AWS_DEFAULT_REGION, no config
        or credentials file. With `env`, no --endpoint-url and only the
        basic variables plus `env` (a profile's setup). Returns the
        CompletedProcess (text)."""
        c = credential or self.admin
        command = [aws_cli(), *args]
        if env is None:
            env = {
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_ACCESS_KEY_ID": c.access_key_id,
                "AWS_SECRET_ACCESS_KEY": secret if secret is not None else c.secret,
                "AWS_DEFAULT_REGION": region,
            }
            command[1:1] = ["--endpoint-url", self.endpoint]
        result = subprocess.run(
            command,
            env=self.client_env(env),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr}\nkmsd log:\n{self.log()}"
            )
        return result

    def client_env(self, env):
        """A client process's environment: PATH, a HOME of its own, no
        proxy for loopback, no instance metadata lookups, and `env`."""
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "AWS_EC2_METADATA_DISABLED": "true",
            **env,
        }

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{key_id}"

    def alias_arn(self, alias_name: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias_name}"


def aws_cli() -> str:
    """The `aws` of this Python's venv (scripts/aws-client-tests.sh), or
    `KMSD_AWS_CLI`, or the first on PATH."""
    if os.environ.get("KMSD_AWS_CLI"):
        return os.environ["KMSD_AWS_CLI"]
    beside = Path(sys.executable).parent / "aws"
    if beside.is_file():
        return str(beside)
    found = shutil.which("aws")
    if found is None:
        raise unittest.SkipTest("no AWS CLI (scripts/aws-client-tests.sh installs it)")
    return found


class clock_at:
    """Context manager: every request botocore signs meanwhile is dated
    `when` (a boto3 client's own requests included), as by a client whose
    clock is off. botocore's SigV4 signer reads the time through
    botocore.auth.get_current_datetime."""

    def __init__(self, when: datetime.datetime) -> None:
        self.when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)

    def __enter__(self):
        self.saved = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda *a, **k: self.when
        return self

    def __exit__(self, *exc):
        botocore.auth.get_current_datetime = self.saved
        return False


class KmsdTestCase(unittest.TestCase):
    """One daemon per test class, stopped when the class ends (failed or
    not). `cls.kms` is the admin's boto3 client."""

    kmsd: Kmsd
    kms = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.kmsd = Kmsd()
        cls.addClassCleanup(cls.kmsd.stop)
        cls.kms = cls.kmsd.client()

    def create_key(self, **kwargs) -> str:
        """A new key of the admin's; its id."""
        return self.kms.create_key(**kwargs)["KeyMetadata"]["KeyId"]

    def assertError(self, context, code, status=None):
        """The ClientError caught by `with self.assertRaises(...) as context`
        has AWS's error code and, if given, HTTP status."""
        error = context.exception.response["Error"]
        self.assertEqual(error.get("Code"), code, context.exception.response)
        if status is not None:
            self.assertEqual(
                context.exception.response["ResponseMetadata"]["HTTPStatusCode"],
                status,
                context.exception.response,
            )
        return error.get("Message", "")
