"""The AWS CLI (awscli from PyPI) against kmsd's TCP listener: what a
shell script does with `aws kms ...`, with the credentials and region in
the environment and no config file."""

import base64
import json
import os
import subprocess
import sys

from harness import KmsdTestCase


class AwsCli(KmsdTestCase):
    def aws_json(self, *args, **kwargs):
        return json.loads(self.kmsd.aws("kms", *args, "--output", "json", **kwargs).stdout)

    def test_version_names_the_pinned_cli(self):
        # The CLI carries its own botocore; the version line shows both.
        version = self.kmsd.aws("--version")
        out = version.stdout + version.stderr
        self.assertIn("aws-cli/1.", out)
        self.assertIn("botocore/", out)

    def test_create_encrypt_decrypt_round_trip(self):
        meta = self.aws_json("create-key", "--description", "from the cli")["KeyMetadata"]
        key = meta["KeyId"]
        self.assertEqual(meta["Arn"], self.kmsd.key_arn(key))
        self.assertEqual(meta["KeyState"], "Enabled")

        secret = bytes(range(256)) * 4  # every byte value, 1 KiB
        plain = self.kmsd.dir / "plain.bin"
        plain.write_bytes(secret)
        ciphertext_b64 = self.kmsd.aws(
            "kms",
            "encrypt",
            "--key-id",
            key,
            "--plaintext",
            f"fileb://{plain}",
            "--encryption-context",
            "app=cli,stage=test",
            "--query",
            "CiphertextBlob",
            "--output",
            "text",
        ).stdout.strip()
        blob = self.kmsd.dir / "blob.bin"
        blob.write_bytes(base64.b64decode(ciphertext_b64, validate=True))

        plaintext_b64 = self.kmsd.aws(
            "kms",
            "decrypt",
            "--ciphertext-blob",
            f"fileb://{blob}",
            "--encryption-context",
            "app=cli,stage=test",
            "--query",
            "Plaintext",
            "--output",
            "text",
        ).stdout.strip()
        self.assertEqual(base64.b64decode(plaintext_b64, validate=True), secret)

        # boto3 reads what the CLI wrote, and the other way round.
        self.assertEqual(
            self.kms.decrypt(
                CiphertextBlob=blob.read_bytes(),
                EncryptionContext={"app": "cli", "stage": "test"},
            )["Plaintext"],
            secret,
        )
        # The wrong context: the CLI exits non-zero with AWS's error.
        wrong = self.kmsd.aws(
            "kms",
            "decrypt",
            "--ciphertext-blob",
            f"fileb://{blob}",
            "--encryption-context",
            "app=other",
            check=False,
        )
        self.assertNotEqual(wrong.returncode, 0)
        self.assertIn("InvalidCiphertextException", wrong.stderr)

    def test_list_keys_and_describe_key(self):
        key = self.create_key(Description="listed")
        self.kms.create_alias(AliasName="alias/cli-listed", TargetKeyId=key)
        listed = self.aws_json("list-keys")
        self.assertIn(key, {k["KeyId"] for k in listed["Keys"]})
        # The CLI pages on its own (--page-size is its Limit).
        paged = self.aws_json("list-keys", "--page-size", "1")
        self.assertEqual(
            {k["KeyId"] for k in paged["Keys"]}, {k["KeyId"] for k in listed["Keys"]}
        )
        described = self.aws_json("describe-key", "--key-id", "alias/cli-listed")
        self.assertEqual(described["KeyMetadata"]["KeyId"], key)
        self.assertEqual(described["KeyMetadata"]["Description"], "listed")

    def test_generate_data_key_and_random(self):
        key = self.create_key()
        dk = self.aws_json("generate-data-key", "--key-id", key, "--key-spec", "AES_256")
        self.assertEqual(len(base64.b64decode(dk["Plaintext"])), 32)
        back = self.kms.decrypt(CiphertextBlob=base64.b64decode(dk["CiphertextBlob"]))
        self.assertEqual(back["Plaintext"], base64.b64decode(dk["Plaintext"]))
        random = self.kmsd.aws(
            "kms",
            "generate-random",
            "--number-of-bytes",
            "24",
            "--query",
            "Plaintext",
            "--output",
            "text",
        ).stdout.strip()
        self.assertEqual(len(base64.b64decode(random)), 24)

    def test_describe_key_of_a_missing_key_fails_with_not_found(self):
        result = self.kmsd.aws(
            "kms",
            "describe-key",
            "--key-id",
            "alias/no-such-alias",
            check=False,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("NotFoundException", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_a_wrong_secret_fails_with_invalid_signature(self):
        result = self.kmsd.aws("kms", "list-keys", secret="not-the-secret", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("InvalidSignatureException", result.stderr)


class ConfiguredClients(KmsdTestCase):
    """The setups docs/aws-clients.md shows, as written there: a profile
    whose `endpoint_url` is kmsd, and the endpoint in the environment."""

    def write_profile(self):
        config = self.kmsd.dir / "aws-config"
        config.write_text(
            "[profile kmsd]\n"
            "region = us-east-1\n"
            f"endpoint_url = {self.kmsd.endpoint}\n"
        )
        credentials = self.kmsd.dir / "aws-credentials"
        credentials.write_text(
            "[kmsd]\n"
            f"aws_access_key_id = {self.kmsd.admin.access_key_id}\n"
            f"aws_secret_access_key = {self.kmsd.admin.secret}\n"
        )
        credentials.chmod(0o600)
        return {
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        }

    def test_a_profile_with_an_endpoint_url(self):
        key = self.create_key(Description="by profile")
        env = self.write_profile()
        # boto3, in a process of its own that reads the files.
        code = (
            "import boto3\n"
            "kms = boto3.Session(profile_name='kmsd').client('kms')\n"
            "print(kms.describe_key(KeyId=%r)['KeyMetadata']['Description'])\n" % key
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=self.kmsd.client_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "by profile")
        # The CLI, with --profile.
        listed = json.loads(
            self.kmsd.aws("--profile", "kmsd", "kms", "list-keys", env=env).stdout
        )
        self.assertIn(key, {k["KeyId"] for k in listed["Keys"]})

    def test_the_endpoint_in_the_environment(self):
        env = {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ENDPOINT_URL_KMS": self.kmsd.endpoint,
            "AWS_ACCESS_KEY_ID": self.kmsd.admin.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.kmsd.admin.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        out = self.kmsd.aws(
            "kms", "generate-random", "--number-of-bytes", "16", "--output", "json", env=env
        ).stdout
        self.assertEqual(len(base64.b64decode(json.loads(out)["Plaintext"])), 16)
