"""SigV4 on kmsd's TCP listener, with botocore's own signer: who a request
runs as (the principal its access key maps to), and AWS's errors for
requests that are not signed right. None of these errors is retried by
botocore (400, not throttling): RetryAttempts stays 0."""

import datetime
import json

import botocore
import botocore.exceptions

from harness import Credential, KmsdTestCase, clock_at


class Authentication(KmsdTestCase):
    def assertRefused(self, call, code, status=400):
        """`call()` raises botocore's ClientError with AWS's `code`, once
        (no retry); returns the message."""
        with self.assertRaises(botocore.exceptions.ClientError) as e:
            call()
        message = self.assertError(e, code, status)
        self.assertEqual(e.exception.response["ResponseMetadata"]["RetryAttempts"], 0)
        return message

    def test_each_access_key_runs_as_its_principal(self):
        for credential in (self.kmsd.admin, self.kmsd.other, self.kmsd.named):
            with self.subTest(access_key_id=credential.access_key_id):
                status, body = self.kmsd.signed_call("WhoAmI", {}, credential)
                self.assertEqual(status, 200, body)
                self.assertEqual(body["Uid"], credential.uid, body)

    def test_a_principal_without_rights_is_refused_by_the_key_policy(self):
        key = self.create_key()
        other = self.kmsd.client(self.kmsd.other)
        message = self.assertRefused(
            lambda: other.encrypt(KeyId=key, Plaintext=b"x"), "AccessDeniedException"
        )
        self.assertIn(self.kmsd.other.principal, message)
        # Not a key creator or an administrator (docs/access.md).
        self.assertRefused(other.create_key, "AccessDeniedException")
        self.assertRefused(other.list_keys, "AccessDeniedException")
        # Anyone may call GenerateRandom.
        self.assertEqual(len(other.generate_random(NumberOfBytes=8)["Plaintext"]), 8)
        # The admin's key is the admin's by its name too.
        named = self.kmsd.client(self.kmsd.named)
        self.assertIn(key, {k["KeyId"] for k in named.list_keys()["Keys"]})

    def test_a_wrong_secret_is_an_invalid_signature(self):
        bad = self.kmsd.client(secret="not-the-secret")
        message = self.assertRefused(bad.list_keys, "InvalidSignatureException")
        self.assertIn("signature", message.lower())
        # The secret's file ends in a newline, which is not part of it.
        bad = self.kmsd.client(secret=self.kmsd.admin.secret + "\n")
        self.assertRefused(bad.list_keys, "InvalidSignatureException")

    def test_an_unknown_access_key_is_unrecognized(self):
        stranger = self.kmsd.client(Credential("AKIDNOBODY", "whatever", "uid:1", 1))
        self.assertRefused(stranger.list_keys, "UnrecognizedClientException")

    def test_a_session_token_is_unrecognized(self):
        # kmsd issues no temporary credentials.
        temporary = self.kmsd.client(session_token="FwoGZXIvYXdzEXAMPLETOKEN")
        self.assertRefused(temporary.list_keys, "UnrecognizedClientException")

    def test_another_region_is_an_invalid_signature(self):
        elsewhere = self.kmsd.client(region="eu-west-1")
        message = self.assertRefused(elsewhere.list_keys, "InvalidSignatureException")
        # AWS: "Credential should be scoped to a valid region."
        self.assertIn("region", message)

    def test_an_unsigned_request_is_refused(self):
        unsigned = self.kmsd.client(signature_version=botocore.UNSIGNED)
        message = self.assertRefused(unsigned.list_keys, "MissingAuthenticationTokenException")
        self.assertIn("Authentication Token", message)
        # GenerateRandom names no key, and is refused all the same.
        self.assertRefused(
            lambda: unsigned.generate_random(NumberOfBytes=8),
            "MissingAuthenticationTokenException",
        )

    def test_a_request_from_a_skewed_clock_is_refused(self):
        utc = datetime.timezone.utc
        now = datetime.datetime.now(utc)
        # Within AWS KMS's 5 minutes either way: fine.
        for minutes in (-4, 4):
            with self.subTest(minutes=minutes), clock_at(now + datetime.timedelta(minutes=minutes)):
                self.kms.generate_random(NumberOfBytes=8)
        # Beyond: "Signature expired" / "Signature not yet current".
        for minutes, words in ((-6, "Signature expired"), (6, "Signature not yet current")):
            with self.subTest(minutes=minutes), clock_at(now + datetime.timedelta(minutes=minutes)):
                message = self.assertRefused(
                    lambda: self.kms.generate_random(NumberOfBytes=8),
                    "InvalidSignatureException",
                )
                self.assertIn(words, message)

    def test_a_body_changed_after_signing_is_an_invalid_signature(self):
        status, body = self.kmsd.signed_call("GenerateRandom", {"NumberOfBytes": 8})
        self.assertEqual(status, 200, body)
        status, body = self.kmsd.signed_call(
            "GenerateRandom",
            {"NumberOfBytes": 8},
            tamper=lambda headers, data: json.dumps({"NumberOfBytes": 9}).encode(),
        )
        self.assertEqual((status, body.get("__type")), (400, "InvalidSignatureException"), body)

    def test_another_operation_than_the_signed_one_is_an_invalid_signature(self):
        def retarget(headers, data):
            headers["X-Amz-Target"] = "TrentService.ListKeys"
            return data

        status, body = self.kmsd.signed_call("GenerateRandom", {}, tamper=retarget)
        self.assertEqual((status, body.get("__type")), (400, "InvalidSignatureException"), body)
